package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// APIConfigApply is broker.APIConfigApply, where every API subject is
// declared. The approval service serves it: it authenticates the approver
// (an org-admin's or security-admin's token) and forwards the call to the
// policy service (broker.InternalConfigApply), which validates and applies
// the file.
//
// Deprecated: use broker.APIConfigApply.
const APIConfigApply = broker.APIConfigApply

// MaxConfigBody bounds an APIConfigApply body.
//
// Deprecated: use broker.MaxConfigBody.
const MaxConfigBody = broker.MaxConfigBody

// ConfigRoles may apply a configuration.
var ConfigRoles = []string{config.RoleOrgAdmin, config.RoleSecurityAdmin}

// ConfigApplyInput is the body of an APIConfigApply call.
//
// Deprecated: use broker.ConfigApplyInput.
type ConfigApplyInput = broker.ConfigApplyInput

// ConfigApplyResult is the answer to an applied (or unchanged)
// configuration.
//
// Deprecated: use broker.ConfigApplyResult.
type ConfigApplyResult = broker.ConfigApplyResult

// handleConfigApply serves broker.InternalConfigApply: the approval service
// authenticated by, an approver holding one of ConfigRoles.
func (s *Service) handleConfigApply(ctx context.Context, c service.Call, in broker.Authorized[ConfigApplyInput]) (any, error) {
	by := in.By
	if by.Kind != events.ActorApprover || !events.ValidID(by.ID) || !slices.ContainsFunc(by.Roles, func(r string) bool { return slices.Contains(ConfigRoles, r) }) {
		return nil, service.Refuse(broker.Errorf(403, events.CodeForbidden,
			"an internal call must name an approver holding one of the roles %s", strings.Join(ConfigRoles, ", ")), events.Rejection{Actor: by})
	}
	return s.applyConfig(ctx, by, in.Input)
}

// applyConfig validates the file, stores it with config.ApplyWithSecrets
// (whole for the approval service, redacted for everyone else) and puts the
// outcome on the audit stream as jit.config (applied, unchanged or refused)
// naming the approver by. A refused file leaves the active configuration
// untouched.
func (s *Service) applyConfig(ctx context.Context, by events.Actor, in ConfigApplyInput) (ConfigApplyResult, error) {
	if in.Source == "" {
		in.Source = "config.yaml"
	}
	log := s.log.With().Str("applied_by", by.ID).Str("source", in.Source).Logger()
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
	rev, changed, err := config.ApplyWithSecrets(ctx, config.Buckets{Config: s.d.Buckets.Config, Secrets: s.d.Buckets.Secrets}, c)
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
