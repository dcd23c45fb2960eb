// Package iniconf reads airlay's config.ini: the grammar shared by every
// package that owns a section (values, sizes, durations, lists), the
// environment overrides, and the one-line errors naming file, section and
// key. A package declares its keys as a list of Key and reads its section
// with Section.Read; server reads the file and hands each section to its
// owner.
//
// Environment: every key of a section read here can be set by the variable
// AIRLAY_<SECTION>_<KEY> in upper case (AIRLAY_WEBSOCKETEVENTS_PUBLISH_TOKEN,
// AIRLAY_MONGODB_URI, AIRLAY_MONGODB_ISSUEUPDATE). A variable wins over the
// file. A variable with a section's prefix that names no key is an error,
// like an unknown key in the file.
package iniconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/ini.v1"
)

// Error is a bad setting: it names the file and, when known, the line, the
// section, the key and the environment variable it came from.
type Error struct {
	File    string
	Line    int    // 0: unknown
	Section string // "": the whole file
	Key     string // "": the whole section
	Env     string // the environment variable the value came from, if any
	Err     error
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	switch {
	case e.Env != "" && e.Key == "":
		return fmt.Sprintf("%s: environment variable %s: %v", loc, e.Env, e.Err)
	case e.Section == "":
		return fmt.Sprintf("%s: %v", loc, e.Err)
	case e.Key == "":
		return fmt.Sprintf("%s: [%s]: %v", loc, e.Section, e.Err)
	case e.Env != "":
		return fmt.Sprintf("%s: [%s] %s (from environment variable %s): %v", loc, e.Section, e.Key, e.Env, e.Err)
	}
	return fmt.Sprintf("%s: [%s] %s: %v", loc, e.Section, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Origin says where the value of a setting came from.
type Origin string

const (
	FromDefault Origin = "default"
	FromFile    Origin = "file"
	FromEnv     Origin = "environment"
)

// File is a parsed config file and the environment that overrides it.
type File struct {
	Path string
	Dir  string // the directory relative paths are relative to

	ini      *ini.File
	lines    map[string]map[string]int // section -> key -> line
	env      map[string]string         // AIRLAY_* variables
	settings []*Setting
}

// Setting is one key as read: for `checkconfig`.
type Setting struct {
	Section, Key string
	Origin       Origin
	Env          string // the variable name when Origin is FromEnv
	Line         int    // the line when Origin is FromFile
	key          *Key
}

// Value returns the effective value as text, masked when the key is a
// secret. Call it after the owner filled its defaults.
func (s *Setting) Value() string {
	v := s.key.Value.String()
	switch {
	case s.key.Mask != nil:
		return s.key.Mask(v)
	case looksSecret(s.Key):
		return Secret(v) // a key added without a Mask is not shown either
	}
	return v
}

// looksSecret reports whether a key's name says it holds a secret:
// ..._token (publish_token, a metrics token), or a name with secret or
// password in it. (token_leeway and max_token_failures do not end in token.)
func looksSecret(key string) bool {
	k := strings.ToLower(key)
	return strings.HasSuffix(k, "token") || strings.Contains(k, "secret") || strings.Contains(k, "password")
}

// Settings returns every key read so far, in the order of reading.
func (f *File) Settings() []*Setting { return f.settings }

// Load reads path; environ (os.Environ() form; nil: none) overrides it.
// sections are the section names the program reads: a section that differs
// from one of them only in case is an error (names are case-sensitive).
func Load(path string, environ []string, sections ...string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errors.New("no such file")
		} else if u := errors.Unwrap(err); u != nil {
			err = u
		}
		return nil, &Error{File: path, Err: err}
	}
	return Parse(path, data, environ, sections...)
}

// Parse parses the contents of a config file; path names it in errors and
// anchors relative paths.
func Parse(path string, data []byte, environ []string, sections ...string) (*File, error) {
	f := &File{Path: path, Dir: filepath.Dir(path), lines: map[string]map[string]int{}, env: map[string]string{}}
	if err := f.scan(data, sections); err != nil {
		return nil, err
	}
	var err error
	f.ini, err = ini.LoadSources(ini.LoadOptions{SpaceBeforeInlineComment: true}, data)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, "AIRLAY_") {
			f.env[name] = val
		}
	}
	return f, nil
}

// scan checks what the ini library would accept silently or report without
// a section: a line that is not key = value, a key set twice, a section
// name in the wrong case. It records the line of every key.
func (f *File) scan(data []byte, sections []string) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	section := ini.DefaultSection
	n, cont := 0, false
	for sc.Scan() {
		n++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		wasCont := cont
		cont = strings.HasSuffix(line, `\`)
		switch {
		case wasCont, line == "", line[0] == ';', line[0] == '#':
			continue
		case line[0] == '[':
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return &Error{File: f.Path, Line: n, Err: fmt.Errorf("%q is not a section header ([name])", line)}
			}
			section = strings.TrimSpace(line[1:end])
			for _, want := range sections {
				if section != want && strings.EqualFold(section, want) {
					return &Error{File: f.Path, Line: n, Section: section, Err: fmt.Errorf("unknown section; section names are case-sensitive: did you mean [%s]?", want)}
				}
			}
			continue
		}
		i := strings.IndexAny(line, "=:")
		where := "[" + section + "]"
		if section == ini.DefaultSection {
			where = "before any section"
		}
		if i <= 0 {
			return &Error{File: f.Path, Line: n, Section: sectionOrEmpty(section), Err: fmt.Errorf("%q is not key = value (%s)", clip(line), where)}
		}
		key := strings.TrimSpace(line[:i])
		if f.lines[section] == nil {
			f.lines[section] = map[string]int{}
		}
		if prev, ok := f.lines[section][key]; ok && slices.Contains(sections, section) {
			return &Error{File: f.Path, Line: n, Section: section, Key: key, Err: fmt.Errorf("set twice (first on line %d); remove one", prev)}
		}
		f.lines[section][key] = n
	}
	return nil
}

func sectionOrEmpty(s string) string {
	if s == ini.DefaultSection {
		return ""
	}
	return s
}

// clip shortens a line quoted in an error: it may hold a secret's first
// characters, but not a whole long value.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Section returns the section name of f; a missing section reads as empty
// (every key takes its default).
func (f *File) Section(name string) *Section {
	s := &Section{file: f, name: name}
	if sec, err := f.ini.GetSection(name); err == nil {
		s.sec = sec
	}
	return s
}

// Section is one section of a config file with the environment applied. Its
// owner reads it with Read.
type Section struct {
	file *File
	name string
	sec  *ini.Section // nil: absent
}

// Exists reports whether the file has the section.
func (s *Section) Exists() bool { return s.sec != nil }

// Name returns the section's name.
func (s *Section) Name() string { return s.name }

// File returns the path of the config file.
func (s *Section) File() string { return s.file.Path }

// Dir returns the directory relative paths are relative to.
func (s *Section) Dir() string { return s.file.Dir }

// Errorf returns an *Error naming key of this section (and the variable
// or the line it came from).
func (s *Section) Errorf(key string, format string, args ...any) error {
	return s.Error(key, fmt.Errorf(format, args...))
}

// Error wraps err as an *Error naming key of this section.
func (s *Section) Error(key string, err error) error {
	e := &Error{File: s.file.Path, Section: s.name, Key: key, Err: err}
	for _, st := range s.file.settings {
		if st.Section == s.name && st.Key == key {
			e.Env, e.Line = st.Env, st.Line
		}
	}
	return e
}

// EnvName returns the environment variable of key in this section.
func (s *Section) EnvName(key string) string { return EnvName(s.name, key) }

// EnvName returns the environment variable of key in section.
func EnvName(section, key string) string {
	return "AIRLAY_" + strings.ToUpper(section) + "_" + strings.ToUpper(key)
}

// A Key is one setting of a section: its name and where its value goes.
type Key struct {
	Name  string
	Value Value
	// Mask, when set, shows the effective value in `checkconfig`: secrets
	// are masked (see Secret and MaskURI).
	Mask func(string) string
}

// Value parses a setting's text into its field, and formats the field.
type Value interface {
	Set(string) error
	String() string
}

// Read sets the keys of the section from the file and the environment (the
// environment wins). An unknown key, in the file or as a variable with the
// section's prefix, is an error; so is a bad value. Keys that are not set
// keep what their fields hold (the owner fills its defaults).
func (s *Section) Read(keys []Key) error {
	byName := make(map[string]*Key, len(keys))
	for i := range keys {
		byName[keys[i].Name] = &keys[i]
	}
	fileVals := map[string]string{}
	if s.sec != nil {
		for _, k := range s.sec.Keys() {
			if _, ok := byName[k.Name()]; !ok {
				return &Error{File: s.file.Path, Line: s.file.lines[s.name][k.Name()], Section: s.name, Key: k.Name(), Err: errors.New("unknown key")}
			}
			v := strings.TrimSpace(k.Value())
			if strings.HasPrefix(v, ";") || strings.HasPrefix(v, "#") {
				v = "" // "key =   ; comment": ini keeps the comment when no space precedes it
			}
			fileVals[k.Name()] = v
		}
	}
	prefix := "AIRLAY_" + strings.ToUpper(s.name) + "_"
	envNames := make(map[string]string, len(keys))
	for i := range keys {
		envNames[EnvName(s.name, keys[i].Name)] = keys[i].Name
	}
	var unknown []string
	for name := range s.file.env {
		if strings.HasPrefix(name, prefix) {
			if _, ok := envNames[name]; !ok {
				unknown = append(unknown, name)
			}
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return &Error{File: s.file.Path, Section: s.name, Env: unknown[0], Err: fmt.Errorf("names no key of [%s] (keys are AIRLAY_%s_<KEY>)", s.name, strings.ToUpper(s.name))}
	}
	for i := range keys {
		k := &keys[i]
		st := &Setting{Section: s.name, Key: k.Name, Origin: FromDefault, key: k}
		env := EnvName(s.name, k.Name)
		v, ok := s.file.env[env]
		if ok {
			st.Origin, st.Env = FromEnv, env
			v = strings.TrimSpace(v)
		} else if v, ok = fileVals[k.Name]; ok {
			st.Origin, st.Line = FromFile, s.file.lines[s.name][k.Name]
		}
		s.file.settings = append(s.file.settings, st)
		if !ok {
			continue
		}
		if err := k.Value.Set(v); err != nil {
			return &Error{File: s.file.Path, Line: st.Line, Section: s.name, Key: k.Name, Env: st.Env, Err: err}
		}
	}
	return nil
}
