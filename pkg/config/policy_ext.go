package config

// validatePolicyExt validates what the policy engine adds to the
// configuration: rule conditions, holidays, the rate limit and the history
// weights of the risk score.
func (c *Config) validatePolicyExt(bad badFunc) {
	if c.RateLimit.Requests < 0 || c.RateLimit.Per < 0 {
		bad(0, "rate_limit", "requests and per must not be negative")
	}
}
