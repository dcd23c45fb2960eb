package iniconf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Func is a Value made of two functions.
type Func struct {
	SetFunc    func(string) error
	StringFunc func() string
}

func (f Func) Set(v string) error { return f.SetFunc(v) }
func (f Func) String() string     { return f.StringFunc() }

// String sets *p to the text as written.
func String(p *string) Value {
	return Func{func(v string) error { *p = v; return nil }, func() string { return *p }}
}

// Path sets *p to a file path, relative to dir unless absolute.
func Path(p *string, dir string) Value {
	return Func{func(v string) error {
		if v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
		}
		*p = v
		return nil
	}, func() string { return *p }}
}

// Port sets *p to a TCP port, 0 to 65535.
func Port(p *int) Value {
	return Func{func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q is not a port (0-65535)", v)
		}
		*p = n
		return nil
	}, func() string { return strconv.Itoa(*p) }}
}

// Int sets *p to a whole number of at least min.
func Int(p *int, min int) Value {
	return Func{func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return fmt.Errorf("%q is not a whole number >= %d", v, min)
		}
		*p = n
		return nil
	}, func() string { return strconv.Itoa(*p) }}
}

// Size sets *p to a size (see ParseSize) of at least min bytes.
func Size(p *int64, min int64) Value {
	return Func{func(v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n < min {
			return fmt.Errorf("%q is below the minimum of %d bytes", v, min)
		}
		*p = n
		return nil
	}, func() string { return FormatSize(*p) }}
}

// Duration sets *p to a Go duration of at least min.
func Duration(p *time.Duration, min time.Duration) Value {
	return Func{func(v string) error {
		d, err := ParseDuration(v, min)
		if err != nil {
			return err
		}
		*p = d
		return nil
	}, func() string { return FormatDuration(*p) }}
}

// ParseDuration parses a Go duration of at least min; "0" is 0.
func ParseDuration(v string, min time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (such as 90s or 5m)", v)
	}
	if d < min {
		return 0, fmt.Errorf("%q is below the minimum of %v", v, min)
	}
	return d, nil
}

// FormatDuration writes d the short way: 1h, 5m, 90s, 1.5s, 250ms.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Bool sets *p from true/false, yes/no, on/off, 1/0.
func Bool(p *bool) Value {
	return Func{func(v string) error {
		switch strings.ToLower(v) {
		case "true", "yes", "on", "1":
			*p = true
		case "false", "no", "off", "0":
			*p = false
		default:
			return fmt.Errorf("%q is not true or false", v)
		}
		return nil
	}, func() string { return strconv.FormatBool(*p) }}
}

// OneOf sets *p to one of allowed.
func OneOf(p *string, allowed ...string) Value {
	return Func{func(v string) error {
		for _, a := range allowed {
			if v == a {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}, func() string { return *p }}
}

// Level sets *p to a log level: debug, info, warn or error.
func Level(p *slog.Level) Value {
	return Func{func(v string) error {
		if err := p.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q is not one of debug, info, warn, error", v)
		}
		return nil
	}, func() string { return strings.ToLower(p.String()) }}
}

// Origins sets *p to browser origins (scheme://host[:port], comma-separated)
// or "*".
func Origins(p *[]string) Value {
	return Func{func(v string) error {
		var out []string
		for _, o := range strings.Split(v, ",") {
			o = strings.TrimSpace(o)
			if o == "" {
				continue
			}
			if o == "*" {
				out = append(out, o)
				continue
			}
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return fmt.Errorf("%q is not an origin (scheme://host[:port]) or *", o)
			}
			out = append(out, u.Scheme+"://"+u.Host)
		}
		if len(out) == 0 {
			return errors.New("empty: list origins or use *")
		}
		if len(out) > 1 {
			for _, o := range out {
				if o == "*" {
					return errors.New("* cannot be combined with other origins")
				}
			}
		}
		*p = out
		return nil
	}, func() string { return strings.Join(*p, ",") }}
}

// ParseSize parses a size: a number of bytes or a number with KiB, MiB or
// GiB. KB, MB and GB are read as the same binary units (1MB = 1MiB =
// 1048576 bytes), as most servers' configs do; `checkconfig` shows the
// bytes.
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB)", v)
	}
	return n * mult, nil
}

// FormatSize writes n in bytes, with its binary unit when it has one exactly:
// "1048576 (1MiB)".
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return fmt.Sprintf("%d (%d%s)", n, n/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}

// Secret masks a secret: "" stays "" (so an unset secret shows as unset),
// anything else is "****" (its length is not shown either).
func Secret(v string) string {
	if v == "" {
		return ""
	}
	return "****"
}

// MaskURI masks the password of a connection string
// (mongodb://user:****@host1,host2/...) and query parameters that name a
// password, secret or token.
func MaskURI(v string) string {
	if v == "" {
		return ""
	}
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok {
		return "****" // not a URI: it may be anything
	}
	authority, path, hasPath := rest, "", false
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, path, hasPath = rest[:i], rest[i:], true
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		user := authority[:at]
		if name, _, has := strings.Cut(user, ":"); has {
			user = name + ":****"
		}
		authority = user + authority[at:]
	}
	if hasPath {
		if base, query, ok := strings.Cut(path, "?"); ok {
			params := strings.Split(query, "&")
			for i, p := range params {
				k, _, _ := strings.Cut(p, "=")
				lk := strings.ToLower(k)
				if strings.Contains(lk, "password") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") {
					params[i] = k + "=****"
				}
			}
			path = base + "?" + strings.Join(params, "&")
		}
	}
	return scheme + "://" + authority + path
}
