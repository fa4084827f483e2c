package personality

import "errors"

// serveGRPC is filled in by the gRPC API (proto/).
func (l *Log) serveGRPC(addr string, errc chan<- error) (func(), error) {
	return nil, errors.New("gRPC API not built yet")
}
