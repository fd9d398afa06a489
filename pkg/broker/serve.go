package broker

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Concurrent runs h for up to n requests at once. A micro endpoint calls its
// handler for one request at a time (one subscription, one goroutine), so a
// handler that waits on the broker (a KV read, a publish acknowledgement)
// caps the endpoint at one round trip per request; Concurrent overlaps them.
// Requests beyond n wait in the endpoint's subscription, in order.
//
// h gets a detached copy of the request that answers on nc directly. It must
// not get micro's own request: micro reads that request's error state for
// its statistics as soon as the handler returns, which would race with an
// answer sent later from h's goroutine. The price is that answers of a
// concurrent endpoint do not show in micro's error counters.
//
// h may run after the micro service was stopped (for requests that arrived
// before): a handler must check its own service's shutdown state, as every
// JIT endpoint does, and answer 503 when it is stopping.
func Concurrent(nc *nats.Conn, n int, h micro.Handler) micro.Handler {
	if n <= 1 {
		return h
	}
	sem := make(chan struct{}, n)
	return micro.HandlerFunc(func(req micro.Request) {
		d := &detached{
			nc:      nc,
			subject: req.Subject(),
			reply:   req.Reply(),
			data:    req.Data(),
			headers: req.Headers(),
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			h.Handle(d)
		}()
	})
}

// detached is a micro.Request that answers by publishing on its own
// connection, independent of the micro request it was copied from.
type detached struct {
	nc      *nats.Conn
	subject string
	reply   string
	data    []byte
	headers micro.Headers
}

func (r *detached) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data}
	for _, opt := range opts {
		opt(m)
	}
	return r.publish(m)
}

func (r *detached) RespondJSON(v any, opts ...micro.RespondOpt) error {
	data, err := json.Marshal(v)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return r.Respond(data, opts...)
}

func (r *detached) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if code == "" {
		return fmt.Errorf("%w: error code", micro.ErrArgRequired)
	}
	if description == "" {
		return fmt.Errorf("%w: description", micro.ErrArgRequired)
	}
	m := &nats.Msg{Header: nats.Header{
		micro.ErrorHeader:     []string{description},
		micro.ErrorCodeHeader: []string{code},
	}}
	for _, opt := range opts {
		opt(m)
	}
	m.Data = data
	return r.publish(m)
}

func (r *detached) publish(m *nats.Msg) error {
	if r.reply == "" {
		return fmt.Errorf("%w: %w", micro.ErrRespond, nats.ErrMsgNoReply)
	}
	m.Subject = r.reply
	if err := r.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("%w: %w", micro.ErrRespond, err)
	}
	return nil
}

func (r *detached) Data() []byte           { return r.data }
func (r *detached) Headers() micro.Headers { return r.headers }
func (r *detached) Subject() string        { return r.subject }
func (r *detached) Reply() string          { return r.reply }
