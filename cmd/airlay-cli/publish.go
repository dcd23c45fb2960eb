package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// cmdPublish is `web_socket publish`: POST /api/events with one event, an
// array, or a file of events; prints the server's answer; exit 0 only on 200.
func cmdPublish(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("publish", "--url http://HOST:PORT [--wait S] [--token-file F] (EVENT_JSON | --file F)", stdout)
	rawURL := fs.String("url", "", "base URL of the server, http://HOST:PORT (required)")
	wait := fs.String("wait", "", "wait up to S seconds (0-60) for delivery; the answer then counts delivered and pending")
	file := fs.String("file", "", "file with one event, a JSON array of events, or one event per line (- for stdin)")
	tokenFile := fs.String("token-file", "", "file holding the publish token (default: $AIRLAY_PUBLISH_TOKEN)")
	timeout := fs.Duration("timeout", 10*time.Second, "longest wait for the answer, on top of --wait")
	args, err := parseInterleaved(fs, args, stdout)
	if err != nil {
		return err
	}
	if *rawURL == "" {
		return &usageError{"--url is required", usageOf(fs)}
	}
	endpoint, err := eventsURL(*rawURL)
	if err != nil {
		return &usageError{err.Error(), usageOf(fs)}
	}
	if (*file == "") == (len(args) == 0) || len(args) > 1 {
		return &usageError{"give one EVENT_JSON or --file F", usageOf(fs)}
	}
	if *timeout <= 0 {
		return &usageError{"--timeout must be positive", usageOf(fs)}
	}
	total := *timeout
	if *wait != "" {
		q := endpoint.Query()
		q.Set("wait", *wait)
		endpoint.RawQuery = q.Encode()
		if secs, err := strconv.ParseFloat(*wait, 64); err == nil && secs > 0 && secs <= 60 {
			total += time.Duration(secs * float64(time.Second))
		}
	}
	token, err := tokenSource(*tokenFile, "AIRLAY_PUBLISH_TOKEN", "publish token")
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			ue.usage = usageOf(fs)
		}
		return err
	}
	tok, err := token()
	if err != nil {
		return err
	}

	var body []byte
	if *file != "" {
		if body, err = readEvents(*file); err != nil {
			return err
		}
	} else {
		body = []byte(args[0])
	}

	req, err := http.NewRequest(http.MethodPost, endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: total}).Do(req)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("publish: read the answer: %w", err)
	}
	if a := bytes.TrimSpace(answer); len(a) > 0 {
		fmt.Fprintf(stdout, "%s\n", a)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: the server answered %s", resp.Status)
	}
	return nil
}

// eventsURL returns the /api/events URL of a server's base URL (which may
// already name /api/events).
func eventsURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http://HOST:PORT or https://HOST", raw)
	}
	if !strings.HasSuffix(u.Path, "/api/events") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/api/events"
	}
	return u, nil
}

// readEvents reads a file of events: one JSON value (an event or an array of
// events) is sent as it is; several (one event per line) become an array.
// What is not JSON is sent as it is, for the server to answer.
func readEvents(name string) ([]byte, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("--file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var values [][]byte
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return data, nil
		}
		values = append(values, []byte(v))
	}
	switch len(values) {
	case 0:
		return nil, fmt.Errorf("--file %s: no events", name)
	case 1:
		return data, nil
	}
	return append(append([]byte{'['}, bytes.Join(values, []byte{','})...), ']'), nil
}
