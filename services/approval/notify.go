package approval

import (
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/services/approval/notify"
)

// The service's own part of notifications (package notify delivers them):
// it starts and waits for its Notifier, queues each request that goes
// pending, and knows where the console is for the links.

// WithNotifyBackoff sets the delay before retry attempt n (1-based) of a
// failed notification; tests shorten it.
func WithNotifyBackoff(f func(attempt int) time.Duration) Option {
	return func(s *Service) { s.notifier.SetBackoff(f) }
}

// Counters returns the service's notification counters.
func (s *Service) Counters() *notify.Counters { return s.notifier.Counters() }

// notifyPending queues rec for the notifiers named. It never blocks.
func (s *Service) notifyPending(rec pendingRecord, names []string) {
	s.notifier.Pending(notify.Request{Pending: rec.Pending, Required: rec.Required}, names)
}

// SetPublicAddr records the address the console is served on (package
// web), for notification links when the configuration names no console
// URL.
func (s *Service) SetPublicAddr(addr string) { s.publicAddr.Store(&addr) }

// consoleURL is the console's public base address: the configured one, or
// the address it is served on (SetPublicAddr).
func (s *Service) consoleURL(cfg *config.Config) string {
	if cfg != nil && cfg.Console.URL != "" {
		return strings.TrimRight(cfg.Console.URL, "/")
	}
	if a := s.publicAddr.Load(); a != nil && *a != "" {
		return "http://" + *a
	}
	return ""
}
