package config

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	yamlLineErr      = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// decodeError turns the YAML decoder's error into the validator's form: one
// problem per line, each "name:line: rule "r1": unknown field "colour"",
// naming the rule, agent, approver, … the line belongs to.
func decodeError(name string, b []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return syntaxError(name, b, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	var errs []error
	for _, msg := range te.Errors {
		m := yamlLineErr.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, fmt.Errorf("%s: %s", name, msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		what := m[2]
		if f := yamlUnknownField.FindStringSubmatch(what); f != nil {
			what = fmt.Sprintf("unknown field %q", f[1])
		}
		if item := itemAt(&root, line); item != "" {
			what = item + ": " + what
		}
		errs = append(errs, fmt.Errorf("%s:%d: %s", name, line, what))
	}
	return fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
}

// parserProblems are the problems the YAML parser (not its scanner)
// reports. For these the decoder's "line N" counts from 0: it adds 1 for
// scanner errors only.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// syntaxError reports a YAML syntax error as "name:line: problem", with the
// line counted from 1 whichever part of the decoder found it.
func syntaxError(name string, b []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	m := yamlLineErr.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, name, msg)
	}
	line, _ := strconv.Atoi(m[1])
	if parserProblems[m[2]] {
		line++
	}
	n := bytes.Count(b, []byte("\n"))
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	if line > n && n > 0 {
		line = n // found at the end of the input: the last line
	}
	return fmt.Errorf("%w: %s:%d: %s", ErrInvalid, name, line, m[2])
}

// itemNames says how the items of each top-level list are named in errors.
var itemNames = map[string]struct{ kind, key string }{
	"rules": {"rule", "name"}, "agents": {"agent", "id"}, "approvers": {"approver", "name"},
	"guardrails": {"guardrail", "name"}, "notifiers": {"notifier", "name"},
}

// itemAt names what line belongs to: an item of a top-level list (`rule
// "r1"`, `rule #2` without a name) or a top-level key (`risk`); "" if
// neither.
func itemAt(root *yaml.Node, line int) string {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return ""
	}
	m := root.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		key, val := m[i], m[i+1]
		end := int(^uint(0) >> 1)
		if i+2 < len(m) {
			end = m[i+2].Line
		}
		if line < key.Line || line >= end {
			continue
		}
		names, ok := itemNames[key.Value]
		if !ok || val.Kind != yaml.SequenceNode {
			return key.Value
		}
		for j := len(val.Content) - 1; j >= 0; j-- {
			it := val.Content[j]
			if it.Line > line {
				continue
			}
			if it.Kind == yaml.MappingNode {
				for k := 0; k+1 < len(it.Content); k += 2 {
					if it.Content[k].Value == names.key && it.Content[k+1].Value != "" {
						return fmt.Sprintf("%s %q", names.kind, it.Content[k+1].Value)
					}
				}
			}
			return fmt.Sprintf("%s #%d", names.kind, j+1)
		}
		return key.Value
	}
	return ""
}
