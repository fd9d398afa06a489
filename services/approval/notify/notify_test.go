package notify

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSlackEscapesAgentText(t *testing.T) {
	p := slackPayload(WebhookPayload{Agent: "a", Reason: "<https://evil|click> <!channel>", Duration: "1m"})
	b, err := json.Marshal(p)
	require.NoError(t, err)
	require.NotContains(t, string(b), "<!channel>")
	require.Contains(t, string(b), `\u0026lt;!channel\u0026gt;`)
}
