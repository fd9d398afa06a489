package policy

import (
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// Names of the parts of a risk score.
const (
	RiskSensitivity = "sensitivity"
	RiskDuration    = "duration"
	RiskOffHours    = "off_hours"
	RiskBreadth     = "breadth"
	// The history parts, present only when their weight is set.
	RiskGuardrailFires = "guardrail_fires"
	RiskDenials        = "denials"
	RiskRequestRate    = "request_rate"
)

// Score computes the deterministic risk score of a request decided at now
// from the weights in cfg.Risk and the agent's history h. agent may be nil
// (an agent no longer configured); its duration part then scores the full
// weight. The result always has the four parts sensitivity, duration,
// off_hours, breadth, then guardrail_fires, denials and request_rate for
// each of those weights that is set, each with a Detail a human reads;
// Score is their sum clamped to 0–100.
func Score(cfg *config.Config, agent *config.Agent, req events.Request, now time.Time, h Counts) events.Risk {
	w := cfg.Risk
	parts := make([]events.RiskPart, 0, 7)
	parts = append(parts,
		sensitivity(w, req.Permissions),
		durationPart(w, agent, req.DurationMS),
		offHours(cfg, now.In(cfg.Location())),
		breadth(w, len(req.Permissions)),
	)
	if w.GuardrailFires > 0 {
		parts = append(parts, historyPart(RiskGuardrailFires, w.GuardrailFires, h.GuardrailFires, "guardrail fire", "guardrail fires", "in the last 24h"))
	}
	if w.Denials > 0 {
		parts = append(parts, historyPart(RiskDenials, w.Denials, h.Denials, "denied request", "denied requests", "in the last 24h"))
	}
	if w.RequestRate > 0 {
		parts = append(parts, historyPart(RiskRequestRate, w.RequestRate, h.RequestsLastMinute, "other request", "other requests", "in the last minute"))
	}
	sum := 0
	for _, p := range parts {
		sum += p.Points
	}
	return events.Risk{Score: min(max(sum, 0), 100), Parts: parts}
}

func sensitivity(w config.Risk, perms []string) events.RiskPart {
	part := events.RiskPart{Name: RiskSensitivity, Detail: "no permission requested"}
	best := ""
	for _, p := range perms {
		pts, ok := w.Sensitivity[p]
		if !ok {
			pts = w.Sensitivity["default"]
		}
		if best == "" || pts > part.Points {
			best, part.Points = p, pts
		}
	}
	if best != "" {
		if _, ok := w.Sensitivity[best]; ok {
			part.Detail = fmt.Sprintf("%s is the most sensitive permission requested: %d points", best, part.Points)
		} else {
			part.Detail = fmt.Sprintf("%s is the most sensitive permission requested: %d points (the default sensitivity)", best, part.Points)
		}
	}
	return part
}

func durationPart(w config.Risk, agent *config.Agent, ms int64) events.RiskPart {
	part := events.RiskPart{Name: RiskDuration}
	if agent == nil || agent.MaxJitDuration <= 0 {
		part.Points = w.Duration
		part.Detail = fmt.Sprintf("%s with no maxJitDuration to compare with: the full %d points", fmtMS(ms), w.Duration)
		return part
	}
	maxD := agent.MaxJitDuration.D()
	// In milliseconds, so that no duration overflows. A request beyond the
	// maximum is denied anyway: the part never scores more than its weight,
	// nor less than nothing.
	maxMS := maxD.Milliseconds()
	clamped := min(max(ms, 0), maxMS)
	// round(weight × ms / max), half up, in integers: exact on every platform.
	part.Points = int((2*int64(w.Duration)*clamped + maxMS) / (2 * maxMS))
	part.Detail = fmt.Sprintf("%s of the agent's %s maximum: %d of %d points", fmtMS(ms), events.FormatDuration(maxD), part.Points, w.Duration)
	return part
}

func offHours(cfg *config.Config, local time.Time) events.RiskPart {
	w := cfg.Risk
	part := events.RiskPart{Name: RiskOffHours}
	at := local.Format("Mon 15:04 MST")
	switch {
	case cfg.IsHoliday(local.Format(time.DateOnly)):
		part.Points = w.OffHours
		part.Detail = fmt.Sprintf("decided on a holiday (%s, %s): %d points", local.Format(time.DateOnly), at, w.OffHours)
	case local.Weekday() == time.Saturday || local.Weekday() == time.Sunday:
		part.Points = w.OffHours
		part.Detail = fmt.Sprintf("decided on a weekend (%s): %d points", at, w.OffHours)
	case !config.InHours(w.BusinessHours, local):
		part.Points = w.OffHours
		part.Detail = fmt.Sprintf("decided at %s, outside business hours %s: %d points", at, w.BusinessHours, w.OffHours)
	default:
		part.Detail = fmt.Sprintf("decided at %s, within business hours %s", at, w.BusinessHours)
	}
	return part
}

func breadth(w config.Risk, n int) events.RiskPart {
	extra := max(n-1, 0)
	part := events.RiskPart{Name: RiskBreadth, Points: w.Breadth * extra}
	if extra == 0 {
		part.Detail = "a single permission"
	} else {
		part.Detail = fmt.Sprintf("%d permissions, %d beyond the first at %d points each", n, extra, w.Breadth)
	}
	return part
}

// historyPart scores weight points for each of n recent events, at most
// 100.
func historyPart(name string, weight, n int, one, many, when string) events.RiskPart {
	n = max(n, 0)
	part := events.RiskPart{Name: name, Points: min(weight*min(n, 100), 100)}
	switch n {
	case 0:
		part.Detail = fmt.Sprintf("no %s %s", many, when)
	case 1:
		part.Detail = fmt.Sprintf("1 %s %s at %d points: %d points", one, when, weight, part.Points)
	default:
		part.Detail = fmt.Sprintf("%d %s %s at %d points each: %d points", n, many, when, weight, part.Points)
	}
	return part
}
