package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/rs/zerolog"
)

// APIConfigApply is the request-reply subject on which the policy service
// validates and applies a configuration file (jitctl config apply). The
// caller presents an org-admin's or security-admin's token in
// broker.HeaderToken.
const APIConfigApply = "jitapi.config.apply"

// MaxConfigBody bounds an APIConfigApply body (NATS's default payload
// limit).
const MaxConfigBody = 1 << 20

// ConfigRoles may apply a configuration.
var ConfigRoles = []string{config.RoleOrgAdmin, config.RoleSecurityAdmin}

// ConfigApplyInput is the body of an APIConfigApply call.
type ConfigApplyInput struct {
	// Source names the file; errors and the audit event name it.
	Source string `json:"source"`
	// YAML is the file's content.
	YAML string `json:"yaml"`
}

// ConfigApplyResult is the answer to an applied (or unchanged)
// configuration. A refused one is answered 400 invalid_config with every
// problem in the message.
type ConfigApplyResult struct {
	Outcome  string `json:"outcome"` // applied | unchanged
	Source   string `json:"source"`
	Revision uint64 `json:"revision"`
	Digest   string `json:"digest"`
}

// applyConfig authenticates the caller against the active configuration,
// validates the file, stores it with config.Apply and puts the outcome on
// the audit stream as jit.config (applied, unchanged or refused) naming the
// approver. A refused file leaves the active configuration untouched.
func (s *Service) applyConfig(ctx context.Context, token string, body []byte) (ConfigApplyResult, error) {
	anonymous := events.Rejection{Actor: events.Actor{Kind: events.ActorApprover, ID: events.UnknownAgent}}
	if token == "" {
		return ConfigApplyResult{}, s.refuse(ctx, broker.Errorf(401, events.CodeUnauthenticated,
			"no approver token: pass an org-admin's or security-admin's token in the %s header (JIT_TOKEN)", broker.HeaderToken), anonymous)
	}
	ap, ok := s.d.Config.Current().Authenticate(token)
	if !ok {
		return ConfigApplyResult{}, s.refuse(ctx, broker.Errorf(401, events.CodeUnauthenticated, "the approver token is not recognised"), anonymous)
	}
	by := events.Actor{Kind: events.ActorApprover, ID: ap.Name, Roles: slices.Clone(ap.Roles)}
	if !ap.HasRole(ConfigRoles...) {
		return ConfigApplyResult{}, s.refuse(ctx, broker.Errorf(403, events.CodeForbidden,
			"%s holds %v; applying a configuration needs org-admin or security-admin", ap.Name, ap.Roles), events.Rejection{Actor: by})
	}
	var in ConfigApplyInput
	if len(body) > MaxConfigBody {
		return ConfigApplyResult{}, s.refuse(ctx, broker.Errorf(413, events.CodeTooLarge, "request body is %d bytes; the limit is %d", len(body), MaxConfigBody), events.Rejection{Actor: by})
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return ConfigApplyResult{}, s.refuse(ctx, broker.Errorf(400, events.CodeMalformed, "malformed request body: %v", err), events.Rejection{Actor: by})
	}
	if in.Source == "" {
		in.Source = "config.yaml"
	}
	log := s.log.With().Str("applied_by", ap.Name).Str("source", in.Source).Logger()
	now := s.now().UTC()

	c, err := config.Parse(in.Source, []byte(in.YAML))
	if err != nil {
		data := events.ConfigApplied{Outcome: "refused", Source: in.Source, Error: err.Error(), AppliedBy: by, AppliedAt: now}
		if _, _, perr := s.pub.Emit(ctx, events.NewID("cfg"), events.TypeConfigApplied, "", data); perr != nil {
			return ConfigApplyResult{}, fmt.Errorf("record refused configuration: %w", perr)
		}
		log.Warn().Err(err).Msg("configuration refused; the active one stays")
		return ConfigApplyResult{}, broker.Errorf(400, events.CodeInvalidConfig, "%s", err.Error())
	}
	rev, changed, err := config.Apply(ctx, s.d.Buckets.Config, c)
	if err != nil {
		return ConfigApplyResult{}, err
	}
	res := ConfigApplyResult{Outcome: "applied", Source: in.Source, Revision: rev, Digest: c.Digest()}
	id := fmt.Sprintf("cfg/%s/%d", res.Digest, rev)
	if !changed {
		res.Outcome = "unchanged"
		id = events.NewID("cfg")
	}
	data := events.ConfigApplied{Outcome: res.Outcome, Digest: res.Digest, Source: in.Source, Revision: rev, AppliedBy: by, AppliedAt: now}
	if _, _, err := s.pub.Emit(ctx, id, events.TypeConfigApplied, "", data); err != nil {
		return ConfigApplyResult{}, fmt.Errorf("record applied configuration: %w", err)
	}
	log.Info().Uint64("revision", rev).Str("digest", res.Digest).Str("outcome", res.Outcome).Msg("configuration applied")
	return res, nil
}

// refuse records refused API input as jit.rejected (stage config) and
// returns ae.
func (s *Service) refuse(ctx context.Context, ae *broker.APIError, r events.Rejection) error {
	r.Stage = events.StageConfig
	r.Code = ae.Code
	r.Message = ae.Message
	r.RejectedAt = s.now().UTC()
	if err := s.pub.Reject(ctx, events.NewID("rej"), r); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Str("code", r.Code).Msg("could not publish jit.rejected")
	}
	return ae
}
