package files

import "errors"

// Errors of the stores; package server maps each to its answer.
var (
	ErrTooLarge    = errors.New("file over max_file_bytes")                  // 413
	ErrFull        = errors.New("store full (max_files or max_files_bytes)") // 507
	ErrDiskFull    = errors.New("no space left on the device of files_dir")  // 507
	ErrCut         = errors.New("upload cut off before its end")             // 400
	ErrClosed      = errors.New("file store closed")                         // 503: shutting down
	ErrNotFound    = errors.New("no such file, or its link expired")         // 404
	ErrUnavailable = errors.New("MongoDB failed")                            // 503 code 7
)
