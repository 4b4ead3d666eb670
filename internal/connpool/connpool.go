// Package connpool keeps one shared gRPC client connection per address, for
// the node's forwarding and for the Go client.
package connpool

import (
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Pool keeps one connection per address.
type Pool struct {
	mu    sync.Mutex
	opts  []grpc.DialOption
	conns map[string]*grpc.ClientConn
}

// New dials with opts (credentials, interceptors).
func New(opts ...grpc.DialOption) *Pool {
	return &Pool{opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// Dial returns the pooled connection to addr, creating it lazily.
func (p *Pool) Dial(addr string) (grpc.ClientConnInterface, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, p.opts...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "address %q: %v", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

// Close closes every pooled connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for addr, c := range p.conns {
		errs = append(errs, c.Close())
		delete(p.conns, addr)
	}
	return errors.Join(errs...)
}
