package config

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestYAMLSyntaxErrorsNameTheirLine: a syntax error points at the line it
// is on, counted from 1, whether the YAML parser or its scanner found it
// (the decoder counts the parser's lines from 0). Where the parser gives
// the construct it could not finish, that is the construct's first line.
func TestYAMLSyntaxErrorsNameTheirLine(t *testing.T) {
	for file, want := range map[string]string{
		"unclosed-list.yaml":      `unclosed-list.yaml:7: did not find expected ',' or ']'`,
		"bad-indent.yaml":         "bad-indent.yaml:4: did not find expected '-' indicator",
		"mapping-in-value.yaml":   `mapping-in-value.yaml:5: mapping values are not allowed in this context`,
		"unclosed-last-line.yaml": `unclosed-last-line.yaml:3: did not find expected ',' or '}'`,
	} {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join("testdata", "syntax", file)
			_, err := LoadFile(path)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrInvalid), "%v", err)
			require.Equal(t, "invalid configuration: "+filepath.Join("testdata", "syntax", want), err.Error())
		})
	}
}
