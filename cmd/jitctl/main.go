// Command jitctl is the JIT system's command-line client: agents request
// elevation and report work done, approvers answer pending requests,
// operators check permissions, list grants, read the audit trail, fire a
// guardrail and lift suspensions.
//
// Exit status: 0 granted, allowed or done; 1 denied or not allowed; 2 any
// error (bad flags, an API error, no connection).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
