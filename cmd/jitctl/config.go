package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
)

// configCmd is "jitctl config apply FILE" and "jitctl config show".
func (a *app) configCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand: apply or show")
	}
	switch args[0] {
	case "apply":
		return a.configApply(ctx, args[1:])
	case "show":
		return a.configShow(ctx, args[1:])
	}
	return usagef("unknown subcommand %q: apply or show", args[0])
}

// configApply sends FILE to the policy service, which validates it, stores
// it as the active configuration and records who applied it. A refused file
// is printed with every problem and leaves the active configuration as it
// was.
func (a *app) configApply(ctx context.Context, args []string) error {
	fs := a.flags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos, "FILE"); err != nil {
		return err
	}
	b, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	token, nc, err := a.approverConn()
	if err != nil {
		return err
	}
	defer nc.Close()
	var res broker.ConfigApplyResult
	err = a.call(ctx, nc, broker.APIConfigApply, token, broker.ConfigApplyInput{Source: pos[0], YAML: string(b)}, &res)
	var ae *broker.APIError
	if errors.As(err, &ae) && ae.Code == "invalid_config" {
		if a.json {
			_ = a.printJSON(map[string]string{"outcome": "refused", "source": pos[0], "error": ae.Message})
		} else {
			fmt.Fprintf(a.stderr, "refused: %s\nthe active configuration is unchanged\n", ae.Message)
		}
		return errRefused
	}
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(res)
	}
	a.printf("%s %s: revision %d, digest %s\n", res.Outcome, res.Source, res.Revision, res.Digest)
	return nil
}

// configShowResult is configShow's --json output.
type configShowResult struct {
	Revision uint64         `json:"revision"`
	Digest   string         `json:"digest"`
	Config   *config.Config `json:"config"`
}

// configShow prints the active configuration with its revision and digest.
func (a *app) configShow(ctx context.Context, args []string) error {
	fs := a.flags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	c, rev, err := activeConfig(ctx, js)
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(configShowResult{Revision: rev, Digest: c.Digest(), Config: c})
	}
	y, err := configYAML(c)
	if err != nil {
		return err
	}
	a.printf("# active configuration: revision %d, digest %s\n", rev, c.Digest())
	if c.Redacted {
		a.printf("# approvers' token hashes and notifiers' URLs and secrets are only the approval service's to read\n")
	}
	a.printf("%s", y)
	return nil
}

// activeConfig reads and validates the active configuration.
func activeConfig(ctx context.Context, js jetstream.JetStream) (*config.Config, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, broker.BucketConfig)
	if err != nil {
		return nil, 0, fmt.Errorf("open bucket %s (is the JIT system set up on this server?): %w", broker.BucketConfig, err)
	}
	e, err := kv.Get(ctx, config.ActiveKey)
	if err != nil {
		return nil, 0, fmt.Errorf("read the active configuration: %w", err)
	}
	c, err := config.FromJSON(e.Value())
	if err != nil {
		return nil, 0, err
	}
	return c, e.Revision(), nil
}

// configYAML writes c as block-style YAML in its canonical field order,
// leaving out empty fields (through its JSON form).
func configYAML(c *config.Config) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(c.JSON(), &n); err != nil {
		return nil, err
	}
	var block func(*yaml.Node)
	block = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			// The stored copy's bookkeeping, and the secrets it lacks.
			var kept []*yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				secret := (k == "token_sha256" || k == "secret" || k == "url") && v.Kind == yaml.ScalarNode && v.Value == ""
				if k == "redacted" || k == "digest" || secret {
					continue
				}
				kept = append(kept, n.Content[i], v)
			}
			n.Content = kept
		}
		n.Style &^= yaml.FlowStyle
		if n.Kind == yaml.ScalarNode && n.Style&yaml.DoubleQuotedStyle != 0 && n.Tag == "!!str" {
			n.Style &^= yaml.DoubleQuotedStyle
		}
		for _, c := range n.Content {
			block(c)
		}
	}
	block(&n)
	return yaml.Marshal(&n)
}
