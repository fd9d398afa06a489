package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
)

// The variables a rule condition sees. Each is a typed object, so a
// misspelt field is an error when the configuration loads, not when a
// request arrives. docs/configuration.md lists them; keep it in step.
const (
	celRequest = "request"
	celAgent   = "agent"
	celTime    = "time"
	celRisk    = "risk"
)

// CELRequest is the request as a rule condition sees it (variable request).
type CELRequest struct {
	Agent       string            `cel:"agent"`
	Permissions []string          `cel:"permissions"`
	Duration    time.Duration     `cel:"duration"`
	Reason      string            `cel:"reason"`
	Context     map[string]string `cel:"context"`
}

// CELAgent is the requesting agent and its recent history (variable agent).
// The history counts events before the request being decided: grants,
// denials and guardrail fires in the 24 hours before it, requests in the
// minute before it.
type CELAgent struct {
	ID             string            `cel:"id"`
	Owner          string            `cel:"owner"`
	Labels         map[string]string `cel:"labels"`
	Base           []string          `cel:"base"`
	Eligible       []string          `cel:"eligible"`
	MaxDuration    time.Duration     `cel:"max_duration"`
	Grants24h      int64             `cel:"grants_24h"`
	Denials24h     int64             `cel:"denials_24h"`
	GuardrailFires int64             `cel:"guardrail_fires_24h"`
	Requests1m     int64             `cel:"requests_1m"`
}

// CELTime is the decision time in the configured zone (variable time).
type CELTime struct {
	Hour     int64    `cel:"hour"`
	Minute   int64    `cel:"minute"`
	Weekday  string   `cel:"weekday"` // mon … sun
	Date     string   `cel:"date"`    // YYYY-MM-DD
	Holiday  bool     `cel:"holiday"` // Date is one of the configured holidays
	Holidays []string `cel:"holidays"`
	// Now is the instant itself, for timestamp arithmetic.
	Now time.Time `cel:"now"`
}

// CELRisk is the request's risk score and its parts by name (variable
// risk).
type CELRisk struct {
	Score int64            `cel:"score"`
	Parts map[string]int64 `cel:"parts"`
}

// CELInput is everything a rule condition is evaluated against.
type CELInput struct {
	Request CELRequest
	Agent   CELAgent
	Time    CELTime
	Risk    CELRisk
}

// ResolveName implements interpreter.Activation without allocating a map
// per evaluation.
func (in *CELInput) ResolveName(name string) (any, bool) {
	switch name {
	case celRequest:
		return &in.Request, true
	case celAgent:
		return &in.Agent, true
	case celTime:
		return &in.Time, true
	case celRisk:
		return &in.Risk, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (in *CELInput) Parent() interpreter.Activation { return nil }

var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(ext.ParseStructTags(true),
			reflect.TypeFor[CELRequest](), reflect.TypeFor[CELAgent](),
			reflect.TypeFor[CELTime](), reflect.TypeFor[CELRisk]()),
		cel.Variable(celRequest, cel.ObjectType("config.CELRequest")),
		cel.Variable(celAgent, cel.ObjectType("config.CELAgent")),
		cel.Variable(celTime, cel.ObjectType("config.CELTime")),
		cel.Variable(celRisk, cel.ObjectType("config.CELRisk")),
		ext.Strings(),
	)
})

// compileCondition parses and type-checks a rule condition. The error names
// each problem with its line and column inside the expression.
func compileCondition(expr string) (cel.Program, error) {
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		var msgs []string
		for _, e := range iss.Errors() {
			msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must be a bool expression, not %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	return prg, nil
}

// EvalCondition evaluates the condition of rule i (an index into c.Rules)
// against in. A rule without a condition holds. An evaluation error (a
// missing map key, say) is returned; the caller fails closed.
func (c *Config) EvalCondition(i int, in *CELInput) (bool, error) {
	if i < 0 || i >= len(c.pol.progs) || c.pol.progs[i] == nil {
		return true, nil
	}
	out, _, err := c.pol.progs[i].Eval(in)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition gave %v, not a bool", out.Value())
	}
	return b, nil
}
