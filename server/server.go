// Package server is the airlay event server: the WebSocket endpoint for
// frontends, the publish API for backends, discovery, health and metrics, on
// one listener.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/files"
	"github.com/olahol/melody"
	"github.com/prometheus/client_golang/prometheus"
)

// Version is reported by /api/config and `airlay-cli version`; release
// builds set it with -ldflags "-X github.com/airlay/airlay/server.Version=...".
var Version = "0.1.0-dev"

// Options are the parts of a Server that are not settings.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	Store  auth.Store   // nil: auth.Open (no MongoDB: every user and dataset exists)
	// Broker is where published events travel and where delivered events
	// come from; the server runs it from New until Shutdown, and uses its
	// capabilities (events.ReadyBroker, events.MetricsBroker,
	// events.OrderedBroker, events.KeyedBroker). Nil: an in-memory broker
	// (events.MemoryBroker).
	Broker events.Broker

	// Ready, when not nil, is one more readiness check besides the
	// broker's: /readyz answers 503 while it returns an error, and the log
	// says why.
	Ready func() error
	// Collectors are more Prometheus collectors served on /metrics, besides
	// the broker's.
	Collectors []prometheus.Collector
	// Files opens the store of temporary download files with the limits of
	// the configuration; cmd gives the GridFS store when MongoDB is
	// configured. Nil: the disk store under files_dir.
	Files func(files.Options) (files.Store, error)
	// WarnInterval is how often a warning that clients can cause at will
	// is written: one line per interval with the number held back. Zero
	// means 10s.
	WarnInterval time.Duration
}

// Server is one event server instance.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	warn     *slog.Logger // log, rate-limited per message (see limitHandler)
	verifier *auth.Verifier
	store    auth.Store
	hub      *events.Hub
	broker   events.Broker
	stopRun  context.CancelFunc
	ran      chan struct{} // closed when the broker's Run returned
	mel      *melody.Melody
	metrics  *metrics
	http     *http.Server
	ready    func() error
	notReady atomic.Pointer[string] // the last reason /readyz gave, to log changes only

	keys *keySet // Idempotency-Keys, when the broker does not keep them

	asks       *events.Asks // open requests of POST /api/ask
	asker      asker        // the broker's events.AskBroker, or localAsks
	askMetrics *askMetrics
	stopping   chan struct{} // closed when Shutdown starts: open asks end

	files       files.Store // temporary download links; nil when publish_token is empty
	fileMetrics *fileMetrics
	uploadIdle  time.Duration // uploadIdleTimeout when the server was made

	started   time.Time // for the console's uptime
	closing   atomic.Bool
	upgrading atomic.Int64 // /ws requests not yet in conns (or failed)
	connSeq   atomic.Uint64
	connCount atomic.Int64 // accepted /ws requests, for max_connections

	users userIndex // open connections by user (presence, revocation)

	connsMu      sync.Mutex
	conns        map[*conn]struct{}
	connsDrained *sync.Cond
}

// New builds a server from cfg. It loads the JWT public key; a bad key is a
// *ConfigError naming jwt_public_key.
func New(cfg *Config, opts Options) (*Server, error) {
	key, err := auth.LoadPublicKey(cfg.JWTPublicKey)
	if err != nil {
		return nil, &ConfigError{File: cfg.File, Section: SectionServer, Key: "jwt_public_key", Err: err}
	}
	s := &Server{
		cfg:   cfg,
		log:   opts.Logger,
		store: opts.Store,
		conns: make(map[*conn]struct{}),
		ran:   make(chan struct{}),

		stopping: make(chan struct{}),

		started: time.Now(),
	}
	s.connsDrained = sync.NewCond(&s.connsMu)
	if s.log == nil {
		s.log = slog.Default()
	}
	every := opts.WarnInterval
	if every <= 0 {
		every = defaultWarnInterval
	}
	s.warn = slog.New(newLimitHandler(s.log.Handler(), every))
	if s.store == nil {
		s.store = auth.Open{}
	}
	s.broker = opts.Broker
	if s.broker == nil {
		s.broker = events.NewMemoryBroker()
	}
	ho := events.HubOptions{}
	if cfg.HistoryTTL > 0 {
		ho.History = events.NewHistory(cfg.HistoryTTL, cfg.HistoryBytes)
	}
	if ob, ok := s.broker.(events.OrderedBroker); ok {
		ho.Epoch, ho.Stamped = ob.Epoch(), true
	}
	if ac, ok := s.broker.(events.AskCounter); ok {
		ho.Requests = ac.Delivered
	}
	s.hub = events.NewHubWith(ho)
	if cb, ok := s.broker.(events.ClusterBroker); ok {
		cb.SetLocal(local{s})
		cb.Handle(TopicPresence, s.answerPresence)
	}
	s.ready = readiness(s.broker, opts.Ready)
	collectors := opts.Collectors
	if mb, ok := s.broker.(events.MetricsBroker); ok {
		collectors = append(mb.Collectors(), collectors...)
	}
	s.asks = events.NewAsks(cfg.MaxAsksPerUser, cfg.MaxAsks)
	if ab, ok := s.broker.(events.AskBroker); ok {
		s.asker = ab
	} else {
		s.asker = localAsks{hub: s.hub}
	}
	var askCollectors []prometheus.Collector
	s.askMetrics, askCollectors = newAskMetrics(s.asks)
	collectors = append(collectors, askCollectors...)
	cacheSize := cfg.TokenCacheSize
	if cacheSize == 0 {
		cacheSize = -1 // auth: negative disables
	}
	s.verifier = auth.NewVerifier(key, auth.Options{Issuer: cfg.JWTIssuer, Leeway: cfg.TokenLeeway, CacheSize: cacheSize})
	s.metrics = newMetrics(s.hub, s.verifier, collectors)
	s.keys = newKeySet(cfg.IdempotencyWindow, cfg.IdempotencyKeys)
	if err := s.openFiles(opts.Files); err != nil {
		return nil, err
	}
	s.mel = s.newMelody()
	ctx, stop := context.WithCancel(context.Background())
	s.stopRun = stop
	go s.runBroker(ctx)
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Hub returns the server's subscription index and fan-out, which its
// broker feeds.
func (s *Server) Hub() *events.Hub { return s.hub }

// runBroker runs the broker until Shutdown; a broker that stops on its own
// is logged (the server keeps serving what it can).
func (s *Server) runBroker(ctx context.Context) {
	defer close(s.ran)
	if err := s.broker.Run(ctx, s.hub); err != nil && ctx.Err() == nil {
		s.log.Error("broker stopped; no more events are delivered", "err", err)
	}
}

// readiness combines the broker's readiness with the extra hook.
func readiness(b events.Broker, extra func() error) func() error {
	rb, _ := b.(events.ReadyBroker)
	switch {
	case rb == nil:
		return extra
	case extra == nil:
		return rb.Ready
	}
	return func() error {
		if err := rb.Ready(); err != nil {
			return err
		}
		return extra()
	}
}

// Handler returns every endpoint of the server.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.metricsGate(s.metrics.handler()))
	api := http.NewServeMux()
	api.HandleFunc("/api/events", s.handlePublish)
	api.HandleFunc("GET /api/config", s.handleConfig)
	api.HandleFunc("/api/files", s.handleFileUpload)
	api.HandleFunc("/api/ask", s.handleAsk)
	api.HandleFunc("/api/presence", s.handlePresence)
	api.HandleFunc("GET "+ConsolePath, s.handleConsole)          // the live page's operator console
	api.HandleFunc("GET "+ConsoleAttachedPath, s.handleAttached) // who is attached to an object
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not found", events.InvalidRequest, "no endpoint "+r.Method+" "+detailPath(r.URL.Path))
	})
	mux.Handle("/api/", s.cors(api))
	mux.HandleFunc("GET /files/{key}/{name}", s.handleFileDownload)
	s.clientRoutes(mux) // GET /client/airlay.js; GET /live when live_page is on
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAnswer(w, http.StatusNotFound, "Not found", events.InvalidRequest)
	})
	return mux
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("listening", "addr", ln.Addr().String(), "version", Version) // the mode is logged by cmd, which wires MongoDB
	err := s.http.Serve(batchListener{Listener: ln, write: s.cfg.WriteTimeout, read: s.cfg.PongTimeout})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on the configured address and serves.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.ListenAddr())
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Shutdown stops accepting, closes every connection with 1001 at once,
// lets the HTTP requests in progress finish and waits for the connections
// to go, all within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closing.Swap(true) {
		close(s.stopping)
	}
	s.log.Info("shutting down")
	// net/http closes the listener at once, then waits for the requests in
	// progress, and also (up to 5 s) for connections opened but never used,
	// which browsers open ahead of time: so it runs beside the rest.
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Shutdown(ctx) }()
	// The 1001 goes out now, not after the publishes in progress: one with
	// a slow body or a long ?wait must not hold every client's close back.
	// An upgrade that registers after this list was taken sees closing and
	// closes itself (wsConnect).
	s.connsMu.Lock()
	list := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.connsMu.Unlock()
	for _, c := range list {
		c.close(events.Shutdown)
	}
	done := make(chan struct{})
	go func() {
		// Upgrades under way are not in conns yet (hijacked connections are
		// not net/http's to wait for): wait for them to register, then for
		// every connection to go.
		for s.upgrading.Load() > 0 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		s.connsMu.Lock()
		for len(s.conns) > 0 {
			s.connsDrained.Wait()
		}
		s.connsMu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.connsMu.Lock()
		left := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			left = append(left, c)
		}
		s.connsMu.Unlock()
		s.log.Warn("shutdown timed out; dropping connections", "left", len(left))
		for _, c := range left {
			_ = c.sess.WebsocketConnection().Close()
		}
	}
	var err error
	select {
	case err = <-httpDone:
	case <-ctx.Done():
		err = ctx.Err()
	}
	// The broker stops last: a publish in progress above still reached it.
	// (MongoDB's saves its resume token as it stops.)
	s.stopRun()
	select {
	case <-s.ran:
	case <-ctx.Done():
		s.log.Warn("broker did not stop in time")
		if err == nil {
			err = ctx.Err()
		}
	}
	s.closeFiles()
	s.log.Info("shut down", "connections_closed", len(list))
	return err
}
