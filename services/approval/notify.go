package approval

import (
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/services/approval/notify"
)

// Notifications live in package notify; these names keep the approval
// package's API as it was.

// Headers of a webhook notification.
const (
	HeaderSignature = notify.HeaderSignature
	HeaderDelivery  = notify.HeaderDelivery
)

// NotifyCounters count notification outcomes since start.
type NotifyCounters = notify.Counters

// WebhookPayload is the JSON body a "webhook" notifier receives.
type WebhookPayload = notify.WebhookPayload

// Sign returns the Jit-Signature header value for body sent at t
// (notify.Sign).
func Sign(secret string, t time.Time, body []byte) string { return notify.Sign(secret, t, body) }

// VerifySignature checks a Jit-Signature header against body and secret,
// accepting timestamps within maxAge of now (notify.VerifySignature).
func VerifySignature(secret, header string, body []byte, now time.Time, maxAge time.Duration) bool {
	return notify.VerifySignature(secret, header, body, now, maxAge)
}

// WithNotifyBackoff sets the delay before retry attempt n (1-based) of a
// failed notification; tests shorten it.
func WithNotifyBackoff(f func(attempt int) time.Duration) Option {
	return func(s *Service) { s.notifier.SetBackoff(f) }
}

// Counters returns the service's notification counters.
func (s *Service) Counters() *NotifyCounters { return s.notifier.Counters() }

// notifyPending queues rec for the notifiers named. It never blocks.
func (s *Service) notifyPending(rec pendingRecord, names []string) {
	s.notifier.Pending(notify.Request{Pending: rec.Pending, Required: rec.Required}, names)
}

// consoleURL is the console's public base address: the configured one, or
// the address the service's own HTTP listener serves.
func (s *Service) consoleURL(cfg *config.Config) string {
	if cfg != nil && cfg.Console.URL != "" {
		return strings.TrimRight(cfg.Console.URL, "/")
	}
	if a := s.httpAddr.Load(); a != nil && *a != "" {
		return "http://" + *a
	}
	return ""
}
