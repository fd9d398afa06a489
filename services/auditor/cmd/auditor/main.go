// Command auditor runs the JIT auditor against the NATS server at NATS_URL:
// it keeps a hash chain over the audit stream and publishes signed
// jit.checkpoint events (docs/siem.md).
package main

import (
	"flag"
	"time"

	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/auditor"
)

func main() {
	var o auditor.Options
	service.Main(auditor.Name, func(d service.Deps) service.Service { return auditor.New(d, o) },
		service.WithFlags(func(fs *flag.FlagSet) {
			fs.StringVar(&o.KeyFile, "audit-key", service.EnvOr("JIT_AUDIT_KEY", "./keys/audit-ed25519.key"),
				"Ed25519 signing key (PEM), made with mode 0600 if missing; *.pub files beside it are trusted for resuming (env JIT_AUDIT_KEY)")
			fs.DurationVar(&o.Interval, "checkpoint-interval", envDuration("JIT_CHECKPOINT_INTERVAL", auditor.DefaultInterval),
				"time between checkpoints (env JIT_CHECKPOINT_INTERVAL)")
			fs.StringVar(&o.Durable, "durable", service.EnvOr("JIT_AUDITOR_DURABLE", auditor.DefaultDurable),
				"the auditor's durable consumer; each replica needs its own (env JIT_AUDITOR_DURABLE)")
		}))
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(service.EnvOr(k, "")); err == nil && d > 0 {
		return d
	}
	return def
}
