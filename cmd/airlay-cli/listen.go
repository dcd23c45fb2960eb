package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/airlay/airlay/client"
)

// cmdListen is `web_socket listen`: events on stdout, one JSON line each;
// connection states on stderr, one JSON line each; requests from stdin.
func cmdListen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("listen", "--url ws://HOST:PORT/ws [--token-file F] [--filter REGEX] [--count N] [--timeout D] [--reconnect] [--reply] type[:id]...", stdout)
	rawURL := fs.String("url", "", "WebSocket URL of the server, ws://HOST:PORT/ws (required)")
	tokenFile := fs.String("token-file", "", "file holding the access token, read again whenever a token is needed (default: $AIRLAY_TOKEN)")
	filter := fs.String("filter", "", "print only events whose JSON matches this regular expression")
	count := fs.Int("count", 0, "exit 0 after printing this many events (0: no limit)")
	timeout := fs.Duration("timeout", 10*time.Second, "longest wait for a connection and for the answers to the subscriptions given here")
	reconnect := fs.Bool("reconnect", false, "keep going across drops: reconnect with backoff and re-attach")
	reply := fs.Bool("reply", false, "answer requests of POST /api/ask: attach request, print each request on stdout, and send each line of stdin as the reply to the oldest request not replied yet (a JSON array as it is, any other line as [\"line\"])")
	args, err := parseInterleaved(fs, args, stdout)
	if err != nil {
		return err
	}
	if *rawURL == "" {
		return &usageError{"--url is required", usageOf(fs)}
	}
	if *count < 0 {
		return &usageError{"--count must be 0 or more", usageOf(fs)}
	}
	if *timeout <= 0 {
		return &usageError{"--timeout must be positive", usageOf(fs)}
	}
	var match *regexp.Regexp
	if *filter != "" {
		if match, err = regexp.Compile(*filter); err != nil {
			return &usageError{fmt.Sprintf("--filter: %v", err), usageOf(fs)}
		}
	}
	subs := make([]client.Sub, 0, len(args))
	for _, a := range args {
		typ, id, _ := strings.Cut(a, ":")
		if typ == "" {
			return &usageError{fmt.Sprintf("subscription %q: want type[:id]", a), usageOf(fs)}
		}
		subs = append(subs, client.Sub{Type: typ, ID: id})
	}
	if *reply && !slices.Contains(subs, client.Sub{Type: "request"}) {
		subs = append(subs, client.Sub{Type: "request"})
	}
	token, err := tokenSource(*tokenFile, "AIRLAY_TOKEN", "access token")
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			ue.usage = usageOf(fs)
		}
		return err
	}

	out := &lines{w: stdout}
	diag := &lines{w: stderr}
	counted := make(chan struct{})
	var printed int
	asked := &pendingRequests{}
	opts := client.Options{
		URL:            *rawURL,
		Token:          func(context.Context) (string, error) { return token() },
		ConnectTimeout: *timeout,
		NoReconnect:    !*reconnect,
		OnEvent: func(e client.Event) {
			if *reply && e.Type == "request" {
				asked.push(e.ID)
			}
			if *count > 0 && printed >= *count {
				return
			}
			if match != nil && !match.Match(e.Raw) {
				return
			}
			out.write(e.Raw)
			printed++
			if printed == *count {
				close(counted)
			}
		},
		OnState: func(s client.State) {
			l := stateLine{Event: "connection", State: s.State, Reason: s.Reason, Code: s.Code}
			if s.State == client.StateFail && s.Err != nil {
				l.Error = s.Err.Error()
			}
			diag.json(l)
		},
		OnError: func(err error) { diag.json(stateLine{Event: "error", Error: err.Error()}) },
		// A re-attach after a reconnect that could not recover what was
		// missed (history expired, a restarted server): say so, per
		// subscription, so that a script reloads that object.
		OnReload: func(s client.Sub) { diag.json(reloadLine{Event: "reload", Type: s.Type, ID: s.ID}) },
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c *client.Client
	retry := client.Backoff{}
	for {
		dctx, cancel := context.WithTimeout(ctx, *timeout)
		c, err = client.Dial(dctx, opts)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil // interrupted while connecting
		}
		if !*reconnect {
			return err
		}
		select {
		case <-time.After(retry.Next()):
		case <-ctx.Done():
			return nil
		}
	}
	defer c.Close()

	for _, s := range subs {
		actx, cancel := context.WithTimeout(ctx, *timeout)
		a, err := c.Attach(actx, s)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("attach %s: no answer within %v", s, *timeout)
		case errors.Is(err, client.ErrClosed):
			return fmt.Errorf("attach %s: %w", s, errOr(c.Err(), err))
		case err != nil:
			return fmt.Errorf("attach %s: %w", s, err)
		case !a.OK():
			c.Close()
			return fmt.Errorf("attach %s refused: %s (code %d)", s, a.Message, a.Code)
		}
	}

	go func() {
		// Requests from stdin, one per line, answered on stdout in order.
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var a client.Answer
			var err error
			if *reply {
				id, ok := asked.pop()
				if !ok {
					diag.json(stateLine{Event: "error", Error: "reply: no request to reply to"})
					continue
				}
				a, err = c.Reply(ctx, id, replyData(line))
			} else {
				a, err = c.Request(ctx, bytes.Clone(line))
			}
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, client.ErrClosed) {
					return
				}
				diag.json(stateLine{Event: "error", Error: "request: " + err.Error()})
				continue
			}
			b, _ := json.Marshal(a)
			out.write(b)
		}
	}()

	select {
	case <-counted:
	case <-ctx.Done():
	case <-c.Done():
		return errOr(c.Err(), client.ErrClosed)
	}
	c.Close()
	return nil
}

// pendingRequests are the ids of requests not replied yet, oldest first;
// at most 1000 (the oldest goes first: the server will have timed it out).
type pendingRequests struct {
	mu  sync.Mutex
	ids []string
}

func (p *pendingRequests) push(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) >= 1000 {
		p.ids = p.ids[1:]
	}
	p.ids = append(p.ids, id)
}

func (p *pendingRequests) pop() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) == 0 {
		return "", false
	}
	id := p.ids[0]
	p.ids = p.ids[1:]
	return id, true
}

// replyData is the data of a reply typed as a line: a JSON array as it
// is, anything else as an array of that one string.
func replyData(line []byte) json.RawMessage {
	var arr []json.RawMessage
	if json.Unmarshal(line, &arr) == nil && line[0] == '[' {
		return bytes.Clone(line)
	}
	b, _ := json.Marshal([]string{string(line)})
	return b
}

// reloadLine says on stderr that a subscription may have missed events.
type reloadLine struct {
	Event string `json:"event"`
	Type  string `json:"type"`
	ID    string `json:"id,omitempty"`
}

// stateLine is one JSON line on stderr.
type stateLine struct {
	Event  string `json:"event"`
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
	Code   int    `json:"code,omitempty"`
	Error  string `json:"error,omitempty"`
}

// lines writes whole lines, one writer at a time.
type lines struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lines) write(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(append(bytes.Clone(b), '\n'))
}

func (l *lines) json(v any) {
	b, _ := json.Marshal(v)
	l.write(b)
}

func errOr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// tokenSource returns a function that gives the token: read from file each
// time when file is set (so that another process may replace it), else the
// environment variable. A token never comes from a flag, which `ps` shows.
func tokenSource(file, env, what string) (func() (string, error), error) {
	if file != "" {
		read := func() (string, error) {
			b, err := os.ReadFile(file)
			if err != nil {
				return "", fmt.Errorf("--token-file: %w", err)
			}
			tok := strings.TrimSpace(string(b))
			if tok == "" {
				return "", fmt.Errorf("--token-file %s is empty", file)
			}
			return tok, nil
		}
		if _, err := read(); err != nil {
			return nil, err
		}
		return read, nil
	}
	tok := strings.TrimSpace(os.Getenv(env))
	if tok == "" {
		return nil, &usageError{msg: fmt.Sprintf("no %s: set %s or use --token-file", what, env)}
	}
	return func() (string, error) { return tok, nil }, nil
}

// parseInterleaved parses flags that may come before, between or after the
// arguments, and returns the arguments. After "--" everything is an
// argument.
func parseInterleaved(fs *flags, args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args, stdout); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
