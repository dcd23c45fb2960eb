// Command airlay-cli runs the airlay event server and its development tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/airlay/airlay"
	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/mongodb"
	"github.com/airlay/airlay/server"
)

const usageTop = `usage: airlay-cli <command> [arguments]

commands:
  web_socket   the WebSocket event server and its tools
  version      print the version

Run "airlay-cli <command> --help" for more.
`

const usageWS = `usage: airlay-cli web_socket <command> [arguments]

commands:
  dev [--dir DIR] [--port N]
                            run a complete development server: keys, publish secret,
                            token and config in DIR (default dev), the live page on
  server [--config PATH]    run the event server (PATH defaults to config.ini)
  health [--ready] [--url URL | --config PATH]
                            ask a running server's /healthz (/readyz); exit 0 when 200
  token --key PRIVATE.pem --user ID [--name N] [--ttl 1h] [--issuer ISS]
                            print a development access token (RS256)
  keygen DIR                write DIR/jwt.pem and DIR/jwt-private.pem (kept if both exist)
  config                    print the example config.ini with every key
  checkconfig [--config PATH]
                            validate the configuration; print every setting, secrets masked, and its origin
  checktoken [--config PATH] (TOKEN | FILE | -)
                            verify an access token against the configuration; say why it is refused
  listen --url ws://HOST:PORT/ws [--filter RE] [--count N] [--timeout D] [--reconnect] type[:id]...
                            print events as JSON lines (token: $AIRLAY_TOKEN or --token-file)
  publish --url http://HOST:PORT [--wait S] (EVENT_JSON | --file F)
                            publish events (token: $AIRLAY_PUBLISH_TOKEN or --token-file)

Run "airlay-cli web_socket <command> --help" for more.
`

// exitUsage is the exit status of a usage error.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is printed with its usage text and exits 2.
type usageError struct{ msg, usage string }

func (e *usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintln(stderr, "airlay-cli:", ue.msg)
		}
		fmt.Fprint(stderr, ue.usage)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "airlay-cli:", err)
		return 1
	}
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "help" }

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{"no command", usageTop}
	}
	switch cmd := args[0]; {
	case isHelp(cmd):
		fmt.Fprint(stdout, usageTop)
		return nil
	case cmd == "version":
		if len(args) > 1 {
			if isHelp(args[1]) {
				fmt.Fprintln(stdout, "usage: airlay-cli version")
				return nil
			}
			return &usageError{"version takes no arguments", "usage: airlay-cli version\n"}
		}
		fmt.Fprintln(stdout, "airlay-cli", server.Version)
		return nil
	case cmd == "web_socket":
		return webSocket(args[1:], stdout, stderr)
	default:
		return &usageError{fmt.Sprintf("unknown command %q", cmd), usageTop}
	}
}

func webSocket(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{"web_socket needs a command", usageWS}
	}
	switch cmd := args[0]; {
	case isHelp(cmd):
		fmt.Fprint(stdout, usageWS)
		return nil
	case cmd == "server":
		return cmdServer(args[1:], stdout, stderr)
	case cmd == "dev":
		return cmdDev(args[1:], stdout, stderr)
	case cmd == "health":
		return cmdHealth(args[1:], stdout, stderr)
	case cmd == "token":
		return cmdToken(args[1:], stdout, stderr)
	case cmd == "keygen":
		return cmdKeygen(args[1:], stdout, stderr)
	case cmd == "listen":
		return cmdListen(args[1:], stdout, stderr)
	case cmd == "publish":
		return cmdPublish(args[1:], stdout, stderr)
	case cmd == "checkconfig":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case cmd == "checktoken":
		return cmdCheckToken(args[1:], stdout, stderr)
	case cmd == "config":
		if err := noArgs(newFlags("config", "", stdout), args[1:], stdout); err != nil {
			return err
		}
		_, err := stdout.Write(airlay.ExampleConfig)
		return err
	default:
		return &usageError{fmt.Sprintf("unknown command %q", "web_socket "+cmd), usageWS}
	}
}

// newFlags returns a flag set that reports errors instead of printing or
// exiting; parse prints the usage where it belongs.
func newFlags(name, synopsis string, stdout io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flags{FlagSet: fs, synopsis: synopsis}
}

// flags is a subcommand's flag set and the synopsis of its arguments.
type flags struct {
	*flag.FlagSet
	synopsis string
}

// parse parses flags: --help prints the usage to stdout; a bad flag is a
// usage error (usage on stderr, exit 2).
func parse(fs *flags, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageOf(fs))
			return err
		}
		return &usageError{err.Error(), usageOf(fs)}
	}
	return nil
}

func noArgs(fs *flags, args []string, stdout io.Writer) error {
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0)), usageOf(fs)}
	}
	return nil
}

func usageOf(fs *flags) string {
	var b flagUsage
	out := fs.Output()
	fs.SetOutput(&b)
	fmt.Fprintf(&b, "usage: airlay-cli web_socket %s %s\n", fs.Name(), fs.synopsis)
	fs.PrintDefaults()
	fs.SetOutput(out)
	return string(b)
}

type flagUsage []byte

func (b *flagUsage) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

func cmdServer(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("server", "[--config PATH]", stdout)
	path := fs.String("config", "config.ini", "config file")
	if err := noArgs(fs, args, stdout); err != nil {
		return err
	}
	cfg, mc, err := loadConfig(*path)
	if err != nil {
		return err
	}
	// Listen first: a port in use is one line, before any log line.
	ln, err := listen(cfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	log := newLogger(cfg, stderr)
	opts := server.Options{Logger: log}
	var mg *mongodb.Mongo
	mode := func() {
		log.Info("mode: without MongoDB (events only from POST /api/events; users and datasets are not checked)")
	}
	if mc.URI != "" {
		if mg, mode, err = connectMongo(cfg, mc, log); err != nil {
			return err
		}
		opts.Store, opts.Broker = mg.Store, mg.Broker
		opts.Files = gridFiles(cfg, mc, mg)
	}
	srv, err := server.New(cfg, opts) // runs the broker until Shutdown
	if err != nil {
		if mg != nil {
			_ = mg.Close(context.Background())
		}
		return err
	}
	mode()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		closeMongo(sctx, mg, log)
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr(), err)
	case <-ctx.Done():
	}
	stop() // a second signal kills the process the usual way
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Shutdown stops the broker last (MongoDB's saves its resume token as
	// it stops).
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	<-served
	closeMongo(sctx, mg, log)
	return nil
}

// closeMongo disconnects from MongoDB, when it is used.
func closeMongo(ctx context.Context, mg *mongodb.Mongo, log *slog.Logger) {
	if mg == nil {
		return
	}
	if err := mg.Close(ctx); err != nil {
		log.Warn("mongodb disconnect", "err", err)
	}
}

// listen opens the configured address; an error names the key to change.
func listen(cfg *server.Config) (net.Listener, error) {
	addr := cfg.ListenAddr()
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	key, why := "port", err.Error()
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		why = "address already in use: another process listens there (stop it, or choose another port; 0 takes any free one)"
	case errors.Is(err, syscall.EACCES):
		why = "permission denied (ports below 1024 need privileges)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		key, why = "address", "not an address of this machine"
	}
	return nil, &server.ConfigError{File: cfg.File, Section: server.SectionServer, Key: key, Err: fmt.Errorf("cannot listen on %s: %s", addr, why)}
}

// loadConfig reads the config file with the environment over it: the
// server's section and the [mongodb] section, by their owners.
func loadConfig(path string) (*server.Config, mongodb.Config, error) {
	cfg, err := server.LoadConfig(path)
	if err != nil {
		return nil, mongodb.Config{}, err
	}
	mc, err := mongoConfig(cfg)
	if err != nil {
		return nil, mongodb.Config{}, err
	}
	return cfg, mc, nil
}

func newLogger(cfg *server.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token", "--key PRIVATE.pem --user ID [--name N] [--ttl 1h] [--issuer ISS]", stdout)
	key := fs.String("key", "", "RSA private key (PEM) to sign with")
	user := fs.String("user", "", "user ObjectId (data.id)")
	name := fs.String("name", "", "user name (data.name)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	issuer := fs.String("issuer", "", "iss claim (match jwt_issuer)")
	if err := noArgs(fs, args, stdout); err != nil {
		return err
	}
	if *key == "" || *user == "" {
		return &usageError{"--key and --user are required", usageOf(fs)}
	}
	if *ttl <= 0 {
		return &usageError{"--ttl must be positive", usageOf(fs)}
	}
	priv, err := auth.LoadPrivateKey(*key)
	if err != nil {
		return err
	}
	tok, err := auth.Mint(priv, auth.MintOptions{UserID: *user, Name: *name, Issuer: *issuer, TTL: *ttl})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", "DIR", stdout)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{"keygen needs one DIR", "usage: airlay-cli web_socket keygen DIR\n"}
	}
	pub, priv, err := auth.GenerateKeyPair(fs.Arg(0))
	if errors.Is(err, auth.ErrKeysExist) {
		fmt.Fprintf(stderr, "keeping the existing key pair %s, %s\n", pub, priv)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (public: jwt_public_key) and %s (private: keep it secret)\n", pub, priv)
	return nil
}
