// Package rpcserver serves a witnz service's Connect handlers over mutual
// TLS, with gRPC health, /healthz and /readyz, Prometheus metrics,
// OpenTelemetry tracing interceptors and graceful shutdown.
//
// A service builds one Server, mounts its handlers with Handle (passing
// HandlerOptions so every RPC is traced and counted), registers readiness
// checks, and calls Run until its context ends:
//
//	srv, err := rpcserver.New(rpcserver.Config{Name: "witness", Addr: ..., TLS: tlsCfg, Logger: log})
//	path, h := witnessv1connect.NewWitnessServiceHandler(svc, srv.HandlerOptions()...)
//	srv.Handle(path, h, witnessv1connect.WitnessServiceName)
//	srv.AddReadinessCheck("raft", func(ctx context.Context) error { ... })
//	return srv.Run(ctx)
package rpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/witnz/witnz/libs/mtls"
)

// Config describes the listeners of a server.
type Config struct {
	// Name of the service, used in logs and metrics.
	Name string
	// Addr is the host:port of the Connect/gRPC listener (TLS). Port 0
	// picks a free port; see Server.Addr.
	Addr string
	// AdminAddr is the host:port of a plain-HTTP listener serving /healthz,
	// /readyz and /metrics, for supervisors and scrapers on the same host.
	// Empty disables it.
	AdminAddr string
	// TLS is the server configuration of the main listener. When it
	// requires client certificates, the peer identity is put into every
	// request context (mtls.PeerIdentity). Nil serves plaintext HTTP/2
	// (h2c), which only tests should do.
	TLS *tls.Config
	// ShutdownTimeout bounds the drain on shutdown; zero means 10 s.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// Registry receives the server's metrics; nil makes a new one.
	Registry *prometheus.Registry
}

// Server is a running (or ready to run) Connect server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	ln       net.Listener
	adminLn  net.Listener
	registry *prometheus.Registry
	opts     []connect.HandlerOption

	mu       sync.Mutex
	checks   []check
	services []string

	stopping     atomic.Bool
	stoppingCh   chan struct{}
	stoppingOnce sync.Once
}

type check struct {
	name string
	fn   func(context.Context) error
}

// New binds the listeners and prepares the server; nothing is served until
// Run.
func New(cfg Config) (*Server, error) {
	if cfg.Name == "" {
		return nil, errors.New("rpcserver: Config.Name is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		mux:        http.NewServeMux(),
		registry:   reg,
		stoppingCh: make(chan struct{}),
	}
	otel, err := otelconnect.NewInterceptor(otelconnect.WithoutMetrics())
	if err != nil {
		return nil, fmt.Errorf("rpcserver: otel interceptor: %w", err)
	}
	metrics := newMetricsInterceptor(reg)
	// Small answers (statuses, acknowledgements, hashes) do not shrink
	// when gzipped, yet gzipping them was a tenth of a busy witness
	// leader's CPU: compress only messages worth it.
	s.opts = []connect.HandlerOption{connect.WithInterceptors(otel, metrics), connect.WithCompressMinBytes(compressMinBytes)}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (pick a free address with --listen)", cfg.Addr, err)
	}
	s.ln = ln
	if cfg.AdminAddr != "" {
		aln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on %s: %w (pick a free address with --admin-listen)", cfg.AdminAddr, err)
		}
		s.adminLn = aln
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s, nil
}

// Close releases the listeners of a server that will not Run, for
// example when a later start-up step fails. Run closes them itself.
func (s *Server) Close() error {
	err := s.ln.Close()
	if s.adminLn != nil {
		err = errors.Join(err, s.adminLn.Close())
	}
	return err
}

// Addr is the bound address of the main listener.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// Registry is where services register their own metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// compressMinBytes is the smallest response a handler compresses.
const compressMinBytes = 4096

// HandlerOptions are the options every Connect handler of this server must
// be built with: tracing and metrics interceptors, and compression only
// of responses of at least compressMinBytes.
func (s *Server) HandlerOptions(extra ...connect.HandlerOption) []connect.HandlerOption {
	return append(append([]connect.HandlerOption{}, s.opts...), extra...)
}

// Handle mounts a handler at path and lists the fully qualified service
// names for gRPC health checks.
func (s *Server) Handle(path string, h http.Handler, services ...string) {
	s.mux.Handle(path, h)
	s.mu.Lock()
	s.services = append(s.services, services...)
	s.mu.Unlock()
}

// AddReadinessCheck adds a check that must pass for /readyz and gRPC health
// to report serving. Checks should return quickly; each gets 2 s.
func (s *Server) AddReadinessCheck(name string, fn func(context.Context) error) {
	s.mu.Lock()
	s.checks = append(s.checks, check{name, fn})
	s.mu.Unlock()
}

// Stopping is closed when shutdown begins. Long-lived streaming handlers
// select on it and return, so the drain does not wait for them.
func (s *Server) Stopping() <-chan struct{} { return s.stoppingCh }

// Ready runs the readiness checks; nil means ready.
func (s *Server) Ready(ctx context.Context) error {
	if s.stopping.Load() {
		return errors.New("shutting down")
	}
	s.mu.Lock()
	checks := append([]check(nil), s.checks...)
	s.mu.Unlock()
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.fn(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.stopping.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.Ready(r.Context()); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Check implements grpchealth.Checker from the readiness checks.
func (s *Server) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" {
		s.mu.Lock()
		known := false
		for _, name := range s.services {
			known = known || name == req.Service
		}
		s.mu.Unlock()
		if !known {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
		}
	}
	if err := s.Ready(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Run serves until ctx ends, then marks the server not serving, closes
// Stopping, drains in-flight requests (bounded by ShutdownTimeout) and
// returns. It returns an error only if a listener fails.
func (s *Server) Run(ctx context.Context) error {
	s.mux.Handle(grpchealth.NewHandler(s, s.opts...))

	var handler http.Handler = s.mux
	if s.cfg.TLS != nil && s.cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert {
		handler = withPeerIdentity(s.mux)
	}
	main := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ln := s.ln
	if s.cfg.TLS != nil {
		tc := s.cfg.TLS.Clone()
		if len(tc.NextProtos) == 0 {
			tc.NextProtos = []string{"h2", "http/1.1"}
		}
		ln = tls.NewListener(ln, tc)
	} else {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		main.Protocols = p
	}
	servers := []*http.Server{main}
	listeners := []net.Listener{ln}
	if s.adminLn != nil {
		amux := http.NewServeMux()
		amux.HandleFunc("GET /healthz", s.healthz)
		amux.HandleFunc("GET /readyz", s.readyz)
		amux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		servers = append(servers, &http.Server{Handler: amux, ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, s.adminLn)
	}

	errc := make(chan error, len(servers))
	for i, hs := range servers {
		go func() {
			if err := hs.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", listeners[i].Addr(), err)
				return
			}
			errc <- nil
		}()
	}
	s.log.Info("serving", "addr", s.ln.Addr().String(), "admin_addr", addrString(s.adminLn), "tls", s.cfg.TLS != nil)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.stopping.Store(true)
	s.stoppingOnce.Do(func() { close(s.stoppingCh) })
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			s.log.Warn("drain did not finish in time; closing connections", "error", err)
			hs.Close()
		}
	}
	s.log.Info("stopped")
	return runErr
}

func addrString(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func withPeerIdentity(h http.Handler) http.Handler { return mtls.WithPeerIdentity(h) }
