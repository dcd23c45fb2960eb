package server

import (
	"os"
	"testing"

	"github.com/airlay/airlay/internal/mongosim"
)

// TestMain removes the mongosim binary that the GridFS variants of the
// file tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	mongosim.Cleanup()
	os.Exit(code)
}
