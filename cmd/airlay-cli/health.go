package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/airlay/airlay/server"
)

// cmdHealth is `web_socket health`: the health check of a container
// without a shell or curl (distroless). It asks a running server's
// /healthz (or /readyz with --ready), prints one line and exits 0 when the
// answer is 200, 1 otherwise.
func cmdHealth(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("health", "[--ready] [--url URL | --config PATH] [--timeout D]", stdout)
	url := fs.String("url", "", "the server's base URL, http://HOST:PORT (default: 127.0.0.1 and the port of --config)")
	path := fs.String("config", "config.ini", "config file whose port (and address) to ask")
	ready := fs.Bool("ready", false, "ask /readyz (ready for traffic: MongoDB usable, not shutting down) instead of /healthz (the process serves)")
	timeout := fs.Duration("timeout", 3*time.Second, "longest wait for the answer")
	if err := noArgs(fs, args, stdout); err != nil {
		return err
	}
	base := *url
	if base == "" {
		cfg, err := server.LoadConfig(*path)
		if err != nil {
			return err
		}
		if cfg.Port == 0 {
			return fmt.Errorf("health: %s sets port 0 (any free port): give --url", *path)
		}
		host := cfg.Address
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		base = "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	}
	endpoint := base + "/healthz"
	if *ready {
		endpoint = base + "/readyz"
	}
	resp, err := (&http.Client{Timeout: *timeout}).Get(endpoint)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: GET %s answered %s", endpoint, resp.Status)
	}
	fmt.Fprintf(stdout, "ok: GET %s answered %s\n", endpoint, resp.Status)
	return nil
}
