package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/agentjit/jit/pkg/events"
)

// ErrPanic marks a handler that panicked. The consume loop recovers it: the
// message is terminated (redelivering it would panic again, on every
// instance, forever), reported as jit.rejected with code internal (for
// events; see Consume) and counted in jit_handler_panics_total, and the
// service keeps running.
var ErrPanic = errors.New("handler panicked")

// PanicError is the error a recovered panic becomes; Stack is where it
// happened (logged, never put in an event).
type PanicError struct {
	Value any
	Stack []byte
}

func (p *PanicError) Error() string { return fmt.Sprintf("%v: %v", ErrPanic, p.Value) }

// Unwrap makes errors.Is(err, ErrPanic) hold.
func (p *PanicError) Unwrap() error { return ErrPanic }

// recovering runs f and turns a panic in it into a Permanent *PanicError.
func recovering(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanent(&PanicError{Value: r, Stack: debug.Stack()})
		}
	}()
	return f()
}

// handleEvent runs h for e under recovering; a panic is reported through
// onMalformed (a jit.rejected event, code internal) before the message is
// terminated. If the report cannot be stored its error is returned, so the
// message comes again and is reported then.
func handleEvent(ctx context.Context, h Handler, e events.Event, d Delivery, onMalformed MalformedFunc) error {
	err := recovering(func() error { return h(ctx, e, d) })
	if !errors.Is(err, ErrPanic) || onMalformed == nil {
		return err
	}
	if herr := onMalformed(ctx, d, err); herr != nil {
		return herr
	}
	return err
}
