// Package airlay holds what belongs to the whole project: the example
// config.ini, embedded so that the binary and the tests can read it.
package airlay

import _ "embed"

// ExampleConfig is the committed config.ini: every key with its default and
// meaning. `airlay-cli web_socket config` prints it.
//
//go:embed config.ini
var ExampleConfig []byte
