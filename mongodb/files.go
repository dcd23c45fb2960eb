package mongodb

import "go.mongodb.org/mongo-driver/mongo"

// Database returns the client's handle of database name, for the parts of
// airlay that keep data of their own there (cmd opens the GridFS store of
// package files in it).
func (mg *Mongo) Database(name string) *mongo.Database { return mg.client.Database(name) }
