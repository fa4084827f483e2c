package personality

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	carelogv1 "github.com/carelog/carelog/proto/carelog/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Limits of the gRPC server.
const (
	// grpcMaxRequest bounds one request message. An entry is at most
	// entry.MaxEntrySize; larger entries up to this size still get their
	// per-entry 413 answer (INVALID_ARGUMENT) instead of breaking a bulk
	// stream.
	grpcMaxRequest = 256 << 10
	// grpcMaxResponse bounds one response: GetEntries answers up to
	// api.MaxEntriesPerRequest entries of up to entry.MaxEntrySize each.
	grpcMaxResponse = 16 << 20
	// bulkInFlight is how many entries of one SubmitBulk stream are appended
	// at once. It bounds the memory and backend load one stream can cause;
	// beyond it the stream applies back-pressure through gRPC flow control.
	bulkInFlight = 32
	// grpcStopGrace is how long a graceful stop waits for running calls
	// (bulk streams can be long) before cutting them off.
	grpcStopGrace = 10 * time.Second
)

// NewGRPCServer returns a gRPC server with carelog's limits (message sizes,
// concurrent streams, keepalive enforcement) and the Log service registered.
// Extra options, such as TLS credentials, are applied after carelog's.
func (l *Log) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	base := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(grpcMaxRequest),
		grpc.MaxSendMsgSize(grpcMaxResponse),
		grpc.MaxConcurrentStreams(256),
		grpc.ConnectionTimeout(10 * time.Second),
		// Refuse clients that ping more often than every 20 s; close idle
		// connections after 5 min; ping quiet ones to find dead peers.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 5 * time.Minute, Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
	s := grpc.NewServer(append(base, opts...)...)
	l.RegisterGRPC(s)
	return s
}

// RegisterGRPC registers the Log service (proto/carelog/v1) on s. It
// answers exactly as the HTTP API does: the same validation, the same
// duplicate handling, and errors mapped from the same HTTP statuses.
func (l *Log) RegisterGRPC(s grpc.ServiceRegistrar) {
	carelogv1.RegisterLogServer(s, &grpcService{log: l, requests: l.grpcMetric()})
}

// grpcMetric returns the gRPC request histogram on the log's registry,
// registering it on first use (RegisterGRPC may be called more than once).
func (l *Log) grpcMetric() *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "carelog_log_grpc_request_seconds",
		Help:    "gRPC calls by method and status code (a SubmitBulk stream counts once).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"method", "code"})
	if err := l.metrics.reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(*prometheus.HistogramVec)
		}
		panic(err) // a programming error: the metric's definition is wrong
	}
	return h
}

// serveGRPC listens on addr and serves the gRPC API until stop is called;
// a serving failure goes to errc.
func (l *Log) serveGRPC(addr string, errc chan<- error) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for gRPC: %w", addr, err)
	}
	return l.serveGRPCOn(ln, errc), nil
}

func (l *Log) serveGRPCOn(ln net.Listener, errc chan<- error) (stop func()) {
	s := l.NewGRPCServer()
	l.logger.Info("serving gRPC", slog.String("addr", ln.Addr().String()), slog.String("origin", l.origin))
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := s.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("serving gRPC: %w", err)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			stopped := make(chan struct{})
			go func() { s.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(grpcStopGrace):
				l.logger.Warn("gRPC calls still running after the grace period; cutting them off")
				s.Stop()
				<-stopped
			}
			<-served
		})
	}
}

// grpcCode maps an HTTP status of the API to the gRPC code that means the
// same to a caller.
func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return codes.InvalidArgument
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusConflict:
		return codes.AlreadyExists
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Internal
}

// grpcService implements carelogv1.LogServer on a Log.
type grpcService struct {
	carelogv1.UnimplementedLogServer
	log      *Log
	requests *prometheus.HistogramVec
}

// toStatus turns an error of the Log's methods into the gRPC status the
// caller gets. This is the gRPC edge: the only place such errors become
// codes, always through HTTPStatus, so both APIs say the same thing.
func (s *grpcService) toStatus(method string, err error) *status.Status {
	code, msg := HTTPStatus(err)
	if code >= 500 {
		s.log.logger.Error("gRPC request failed", "method", method, "error", err)
	}
	return status.New(grpcCode(code), msg)
}

// edge is deferred by every unary method: it maps the method's error (once)
// and records the call.
func (s *grpcService) edge(method string, start time.Time, errp *error) {
	code := codes.OK
	if *errp != nil {
		st := s.toStatus(method, *errp)
		*errp, code = st.Err(), st.Code()
	}
	s.requests.WithLabelValues(method, code.String()).Observe(time.Since(start).Seconds())
}

func (s *grpcService) AddEntry(ctx context.Context, req *carelogv1.AddEntryRequest) (_ *carelogv1.AddEntryResponse, err error) {
	defer s.edge("AddEntry", time.Now(), &err)
	return s.addEntry(ctx, req.GetEntry())
}

func (s *grpcService) addEntry(ctx context.Context, raw []byte) (*carelogv1.AddEntryResponse, error) {
	r, code, err := s.log.AddEntry(ctx, raw)
	if err != nil {
		return nil, err
	}
	out := &carelogv1.AddEntryResponse{LeafHash: r.LeafHash, Promise: []byte(r.Promise)}
	if code == http.StatusOK && r.Index != nil {
		out.Index = r.Index
	}
	return out, nil
}

// SubmitBulk appends the entries of a stream, up to bulkInFlight at once,
// and answers each with its sequence number as soon as it is done. A
// refused entry gets its error in its answer; only a broken stream ends the
// call early.
func (s *grpcService) SubmitBulk(stream carelogv1.Log_SubmitBulkServer) (err error) {
	start := time.Now()
	defer func() {
		s.requests.WithLabelValues("SubmitBulk", status.Code(err).String()).Observe(time.Since(start).Seconds())
	}()
	ctx := stream.Context()

	// One goroutine sends, because a stream's Send is not safe for
	// concurrent use. After a send fails it keeps draining, so that no
	// worker blocks.
	answers := make(chan *carelogv1.SubmitBulkResponse)
	sendErr := make(chan error, 1)
	go func() {
		var err error
		for a := range answers {
			if err == nil {
				err = stream.Send(a)
			}
		}
		sendErr <- err
	}()

	var wg sync.WaitGroup
	slots := make(chan struct{}, bulkInFlight)
	var recvErr error
	for {
		req, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				recvErr = err
			}
			break
		}
		slots <- struct{}{} // a slot frees when a worker has handed over its answer
		wg.Add(1)
		go func() {
			defer wg.Done()
			answer := &carelogv1.SubmitBulkResponse{Sequence: req.GetSequence()}
			if r, err := s.addEntry(ctx, req.GetEntry()); err != nil {
				st := s.toStatus("SubmitBulk", err)
				answer.Result = &carelogv1.SubmitBulkResponse_Error{Error: &carelogv1.EntryError{
					Code: uint32(st.Code()), Message: st.Message()}}
			} else {
				answer.Result = &carelogv1.SubmitBulkResponse_Accepted{Accepted: r}
			}
			answers <- answer
			<-slots
		}()
	}
	wg.Wait()
	close(answers)
	if err := <-sendErr; err != nil {
		return err
	}
	return recvErr // already a gRPC status (usually CANCELED)
}

func (s *grpcService) GetCheckpoint(ctx context.Context, _ *carelogv1.GetCheckpointRequest) (_ *carelogv1.GetCheckpointResponse, err error) {
	defer s.edge("GetCheckpoint", time.Now(), &err)
	n := s.log.PublishedCheckpoint()
	if n == nil {
		return nil, errorf(http.StatusServiceUnavailable, "no checkpoint has been published yet; try again shortly")
	}
	return &carelogv1.GetCheckpointResponse{Checkpoint: n}, nil
}

func (s *grpcService) GetInclusionProof(ctx context.Context, req *carelogv1.GetInclusionProofRequest) (_ *carelogv1.GetInclusionProofResponse, err error) {
	defer s.edge("GetInclusionProof", time.Now(), &err)
	p, err := s.log.InclusionProof(ctx, req.GetLeafHash(), req.GetTreeSize())
	if err != nil {
		return nil, err
	}
	return &carelogv1.GetInclusionProofResponse{Index: p.Index, TreeSize: p.Size, Proof: p.Proof}, nil
}

func (s *grpcService) GetConsistencyProof(ctx context.Context, req *carelogv1.GetConsistencyProofRequest) (_ *carelogv1.GetConsistencyProofResponse, err error) {
	defer s.edge("GetConsistencyProof", time.Now(), &err)
	p, err := s.log.ConsistencyProof(ctx, req.GetOldSize(), req.GetTreeSize())
	if err != nil {
		return nil, err
	}
	return &carelogv1.GetConsistencyProofResponse{OldSize: p.Old, TreeSize: p.Size, Proof: p.Proof}, nil
}

func (s *grpcService) GetEntries(ctx context.Context, req *carelogv1.GetEntriesRequest) (_ *carelogv1.GetEntriesResponse, err error) {
	defer s.edge("GetEntries", time.Now(), &err)
	es, err := s.log.Entries(ctx, req.GetStart(), req.GetEnd())
	if err != nil {
		return nil, err
	}
	out := &carelogv1.GetEntriesResponse{Entries: make([]*carelogv1.Entry, len(es))}
	for i, e := range es {
		out.Entries[i] = &carelogv1.Entry{Index: e.Index, Data: e.Data}
	}
	return out, nil
}

func (s *grpcService) GetProofBundle(ctx context.Context, req *carelogv1.GetProofBundleRequest) (_ *carelogv1.GetProofBundleResponse, err error) {
	defer s.edge("GetProofBundle", time.Now(), &err)
	if len(req.GetLeafHash()) != 32 {
		// The HTTP API checks this while parsing its query parameter.
		return nil, errorf(http.StatusBadRequest, "leaf_hash must be a SHA-256 leaf hash (32 bytes)")
	}
	b, err := s.log.ProofBundle(ctx, req.GetLeafHash())
	if err != nil {
		return nil, err
	}
	return &carelogv1.GetProofBundleResponse{Bundle: b}, nil
}
