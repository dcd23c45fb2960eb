// Package clientjs holds the browser client of the airlay event server
// (airlay.js, a dependency-free ES module) and the live page, embedded so
// that the server serves them from its own binary.
package clientjs

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"path"
)

//go:embed airlay.js airlay.d.ts live.html live.js live-boot.js live.css console.js
var files embed.FS

// File is one embedded file with what serving it needs.
type File struct {
	Name        string
	Data        []byte
	ContentType string
	ETag        string // a strong validator of Data
}

var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".ts":   "application/typescript; charset=utf-8",
}

// Get returns the embedded file name ("airlay.js", "airlay.d.ts",
// "live.html", "live.js", "live-boot.js", "live.css", "console.js").
func Get(name string) (File, bool) {
	data, err := files.ReadFile(name)
	if err != nil {
		return File{}, false
	}
	sum := sha256.Sum256(data)
	return File{
		Name:        name,
		Data:        data,
		ContentType: contentTypes[path.Ext(name)],
		ETag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
	}, true
}
