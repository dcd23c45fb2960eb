package auth

import "context"

// Store answers the questions about users that a token alone cannot: whether
// the user still exists (code 3) and whether they may see a dataset (code 4).
// An error means the store could not answer (code 7). The MongoDB package
// implements it; without MongoDB the server uses [Open].
//
// userID and datasetID are lower-case 24-hex ObjectIds.
type Store interface {
	UserExists(ctx context.Context, userID string) (bool, error)
	CanSeeDataset(ctx context.Context, userID, datasetID string) (bool, error)
}

// Open is the Store used without MongoDB: every user exists and may see every
// dataset, so tokens are checked by signature and claims alone.
type Open struct{}

var _ Store = Open{}

// UserExists reports true.
func (Open) UserExists(context.Context, string) (bool, error) { return true, nil }

// CanSeeDataset reports true.
func (Open) CanSeeDataset(context.Context, string, string) (bool, error) { return true, nil }
