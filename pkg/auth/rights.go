package auth

import (
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/jwt/v2"
)

// JSPrefix is the JetStream API prefix of every client principal: its
// account has no JetStream of its own, and the few read-only JetStream
// requests it may make are imported from the services' account under this
// prefix (jetstream.NewWithAPIPrefix, or the nats CLI's --js-api-prefix).
const JSPrefix = "jitjs.API"

// jsAPI is the JetStream API prefix inside the services' account.
const jsAPI = "$JS.API"

func stream(bucket string) string { return "KV_" + bucket }

// Streams of the services' account.
var (
	streamAudit       = broker.AuditStream
	streamGrants      = stream(broker.BucketGrants)
	streamLeases      = stream(broker.BucketLeases)
	streamSuspensions = stream(broker.BucketSuspensions)
	streamPending     = stream(broker.BucketPending)
	streamConfig      = stream(broker.BucketConfig)
	streamSecrets     = stream(broker.BucketSecrets)
	streamPolicyHist  = stream(broker.BucketPolicyHistory)
	allStreams        = []string{streamAudit, streamGrants, streamLeases, streamSuspensions, streamPending, streamConfig, streamSecrets, streamPolicyHist}
)

// SRVStatsRevoker is where every revoker instance answers with its
// statistics on the NATS services API (micro.ControlSubject of the stats
// verb and the micro service jit-revoker): the approval service asks it for
// the console's failing revocations.
const SRVStatsRevoker = "$SRV.STATS.jit-revoker"

// Subjects that cross from client accounts into the services' account.
const (
	// IngressGuardrail is where a guardrail source's guardrail.fired.<agent>
	// publish arrives in the services' account: the revoker checks it and
	// stores it as guardrail.fired.<agent> on the audit stream.
	IngressGuardrail = "jitin.guardrail"
)

// readable are the JetStream objects a client may be allowed to read by
// direct get (never jit_leases or jit_secrets).
var readable = []string{streamAudit, streamGrants, streamSuspensions, streamPending, streamConfig}

// JITExports are what the services' account offers to client accounts.
// Each client account imports only the part its principal may use.
func JITExports() jwt.Exports {
	var ex jwt.Exports
	add := func(name, subject string, typ jwt.ExportType, rt jwt.ResponseType) {
		ex.Add(&jwt.Export{Name: name, Subject: jwt.Subject(subject), Type: typ, ResponseType: rt})
	}
	add("api", "jitapi.>", jwt.Service, jwt.ResponseTypeSingleton)
	add("guardrail-ingress", IngressGuardrail+".*", jwt.Service, jwt.ResponseTypeSingleton)
	for _, s := range readable {
		add("get-"+s, jsAPI+".DIRECT.GET."+s, jwt.Service, jwt.ResponseTypeStream)
		add("get-key-"+s, jsAPI+".DIRECT.GET."+s+".>", jwt.Service, jwt.ResponseTypeSingleton)
		add("info-"+s, jsAPI+".STREAM.INFO."+s, jwt.Service, jwt.ResponseTypeSingleton)
	}
	add("consumer-info", jsAPI+".CONSUMER.INFO."+streamAudit+".*", jwt.Service, jwt.ResponseTypeSingleton)
	add("consumer-next", jsAPI+".CONSUMER.MSG.NEXT."+streamAudit+".*", jwt.Service, jwt.ResponseTypeStream)
	add("consumer-ack", "$JS.ACK."+streamAudit+".>", jwt.Service, jwt.ResponseTypeSingleton)
	add("services", "$SRV.>", jwt.Service, jwt.ResponseTypeStream)
	add("live", broker.LivePrefix+".>", jwt.Stream, "")
	add("state", broker.StatePrefix+".>", jwt.Stream, "")
	return ex
}

// agentAPI is what an agent may call: each arrives on the agent's own
// subject (broker.AgentSubject), which the services serve beside it.
var agentAPI = []string{broker.APIRequest, broker.APIWithdraw, broker.APIDone, broker.APIEvents, broker.APIGrants, broker.APICheck}

// Scope narrows a principal's rights where the configuration says so.
type Scope struct {
	// Agents, for a guardrail source, are the agents it may report on;
	// empty means every agent.
	Agents []string
}

// ClientImports are the imports of principal p's account, from the
// services' account jit: exactly what p may do.
func ClientImports(p Principal, jit string, sc Scope) jwt.Imports {
	var im jwt.Imports
	service := func(subject string) {
		im.Add(&jwt.Import{Name: subject, Subject: jwt.Subject(subject), Account: jit, Type: jwt.Service, Share: true})
	}
	mapped := func(local, remote string) {
		im.Add(&jwt.Import{Name: local, Subject: jwt.Subject(remote), LocalSubject: jwt.RenamingSubject(local), Account: jit, Type: jwt.Service})
	}
	js := func(api string) { mapped(JSPrefix+"."+api, jsAPI+"."+api) }
	feed := func(subject string) {
		im.Add(&jwt.Import{Name: subject, Subject: jwt.Subject(subject), Account: jit, Type: jwt.Stream})
	}
	readAll := func(streams ...string) {
		for _, s := range streams {
			js("STREAM.INFO." + s)
			js("DIRECT.GET." + s)
			js("DIRECT.GET." + s + ".>")
		}
	}
	auditConsumer := func() {
		d := p.AuditDurable()
		js("CONSUMER.INFO." + streamAudit + "." + d)
		js("CONSUMER.MSG.NEXT." + streamAudit + "." + d)
		service("$JS.ACK." + streamAudit + "." + d + ".>")
	}
	switch p.Kind {
	case KindAgent:
		// The agent API, mapped to the agent's own subjects: the subject
		// says who calls (broker.AgentSubject), so the broker need not
		// share the caller's details with each call.
		for _, s := range agentAPI {
			mapped(s, broker.AgentSubject(p.ID, s))
		}
		// Its own grant keys, one at a time.
		js("DIRECT.GET." + streamGrants + ".$KV." + broker.BucketGrants + "." + p.ID + ".>")
		feed(broker.LivePrefix + ".jit.*." + p.ID)
		feed(broker.LivePrefix + ".guardrail.*." + p.ID)
	case KindGuardrail:
		agents := sc.Agents
		if len(agents) == 0 {
			agents = []string{"*"}
		}
		for _, a := range agents {
			im.Add(&jwt.Import{Name: "guardrail " + a, Subject: jwt.Subject(IngressGuardrail + "." + a),
				LocalSubject: jwt.RenamingSubject("guardrail.fired." + a), Account: jit, Type: jwt.Service, Share: true})
		}
	case KindChecker:
		readAll(streamGrants, streamSuspensions)
		js("STREAM.INFO." + streamConfig)
		js("DIRECT.GET." + streamConfig + ".$KV." + broker.BucketConfig + ".active")
		feed(broker.StatePrefix + "." + broker.BucketGrants + ".>")
		feed(broker.StatePrefix + "." + broker.BucketSuspensions + ".>")
		feed(broker.StatePrefix + "." + broker.BucketConfig + ".>")
	case KindSIEM:
		readAll(streamAudit)
		auditConsumer()
		feed(broker.LivePrefix + ".>")
	case KindOperator:
		for _, s := range []string{broker.APIPending, broker.APIApprove, broker.APIDeny, broker.APIReinstate, broker.APIRevoke, broker.APIConfigApply} {
			service(s)
		}
		readAll(streamAudit, streamGrants, streamSuspensions, streamPending)
		js("STREAM.INFO." + streamConfig)
		js("DIRECT.GET." + streamConfig + ".$KV." + broker.BucketConfig + ".active")
		auditConsumer()
		im.Add(&jwt.Import{Name: "services", Subject: "$SRV.>", Account: jit, Type: jwt.Service})
		feed(broker.LivePrefix + ".>")
		feed(broker.StatePrefix + ".>")
	}
	return im
}

// Durables are the services' durable consumers, by stream: no service may
// delete one (nor a reader's audit_* durable), whatever streams it reads.
// Each service's tests check that its durables are listed here.
var Durables = map[string][]string{
	streamAudit: {"policy", "approval", "approval-withdrawals", "approval-suspensions",
		"revoker-guardrail", "revoker-withdrawals", "auditor"},
	streamGrants:  {"revoker-expiry"},
	streamPending: {"approval-timeouts"},
}

// serviceNeeds is what one service does on the broker; ServicePermissions
// turns it into subject permissions.
type serviceNeeds struct {
	publishes []string // event types it publishes (subject "<type>.*")
	writes    []string // buckets it writes
	reads     []string // streams it reads (direct get) and consumes
	serves    []string // request subjects it answers
	calls     []string // request subjects it calls
	// provisions: it creates reader durables on the audit stream.
	provisions bool
	// updates: it may change the configuration of the streams and
	// buckets (jitd: it brings the topology up to its version).
	updates bool
	// resets are durables of the audit stream it may delete to recreate
	// them (the auditor moves its own consumer back to its last checkpoint
	// after a crash).
	resets []string
}

var needs = map[string]serviceNeeds{
	ServiceRequester: {
		publishes: []string{"jit.requested", "jit.rejected", "jit.withdrawn"},
		reads:     []string{streamAudit, streamGrants, streamSuspensions, streamConfig},
		serves:    []string{broker.APIRequest, broker.APIWithdraw, broker.APIEvents, broker.APIGrants, broker.APICheck},
	},
	ServicePolicy: {
		publishes: []string{"jit.decided", "jit.rejected", "jit.config"},
		writes:    []string{broker.BucketConfig, broker.BucketSecrets, broker.BucketPolicyHistory},
		reads:     []string{streamAudit, streamSuspensions, streamConfig, streamPolicyHist},
		serves:    []string{broker.InternalConfigApply},
	},
	ServiceApproval: {
		publishes: []string{"jit.decided", "jit.granted", "jit.approved", "jit.notification", "jit.rejected"},
		writes:    []string{broker.BucketPending, broker.BucketLeases, broker.BucketGrants},
		reads:     []string{streamAudit, streamGrants, streamLeases, streamSuspensions, streamPending, streamConfig, streamSecrets},
		serves:    []string{broker.APIPending, broker.APIApprove, broker.APIDeny, broker.APIReinstate, broker.APIRevoke, broker.APIConfigApply},
		// The gateway's calls, and the revokers' statistics (their
		// failing revocations, for the console), which every instance
		// answers on the services API.
		calls: []string{broker.InternalPrefix + ".>", SRVStatsRevoker},
	},
	ServiceRevoker: {
		publishes: []string{"jit.revoked", "jit.suspended", "jit.reinstated", "jit.rejected", "guardrail.fired"},
		writes:    []string{broker.BucketLeases, broker.BucketGrants, broker.BucketSuspensions},
		reads:     []string{streamAudit, streamGrants, streamLeases, streamSuspensions, streamConfig},
		serves:    []string{broker.APIDone, broker.InternalReinstate, broker.InternalRevoke, IngressGuardrail + ".*"},
	},
	ServiceAuditor: {
		publishes: []string{"jit.checkpoint", "jit.rejected"},
		reads:     []string{streamAudit, streamConfig, streamSuspensions},
		resets:    []string{"auditor"},
	},
	ServiceJitd: {
		publishes:  []string{"jit.config", "jit.rejected"},
		writes:     []string{broker.BucketConfig, broker.BucketSecrets},
		reads:      allStreams,
		provisions: true,
		updates:    true,
	},
}

// ServicePermissions are the subject permissions of service name's user in
// the services' account: topology creation and update (never deletion or
// purge), reads of the streams it needs, writes of the buckets it owns,
// publication of its own event types, its own API subjects, and replies.
// It returns false for an unknown service.
func ServicePermissions(name string) (jwt.Permissions, bool) {
	n, ok := needs[name]
	if !ok {
		return jwt.Permissions{}, false
	}
	// Account information (usage, limits): the KV API asks for it when it
	// creates a bucket.
	pub := []string{jsAPI + ".INFO"}
	var sub []string
	for _, s := range allStreams {
		// Create what is missing, never change what exists: only jitd
		// (and the administrator) updates, so that a compromised service
		// can neither shorten the audit trail nor make a bucket republish
		// what it holds (broker.Options.Update).
		pub = append(pub, jsAPI+".STREAM.INFO."+s, jsAPI+".STREAM.CREATE."+s)
		if n.updates {
			pub = append(pub, jsAPI+".STREAM.UPDATE."+s)
		}
	}
	for _, s := range n.reads {
		pub = append(pub,
			jsAPI+".DIRECT.GET."+s, jsAPI+".DIRECT.GET."+s+".>", jsAPI+".STREAM.MSG.GET."+s,
			// Durable and ephemeral consumers, ordered KV watches.
			jsAPI+".CONSUMER.CREATE."+s, jsAPI+".CONSUMER.CREATE."+s+".>", jsAPI+".CONSUMER.DURABLE.CREATE."+s+".*",
			jsAPI+".CONSUMER.INFO."+s+".*", jsAPI+".CONSUMER.MSG.NEXT."+s+".*",
			"$JS.ACK."+s+".>", "$JS.FC."+s+".>")
		if s != streamAudit {
			// A KV watch deletes its ephemeral consumer when it stops (and
			// waits seconds for the answer if it may not); the durable
			// consumers are denied below: only the administrator deletes
			// those. No service deletes a consumer of the audit stream.
			pub = append(pub, jsAPI+".CONSUMER.DELETE."+s+".*")
		}
	}
	for _, b := range n.writes {
		pub = append(pub, "$KV."+b+".>")
	}
	for _, t := range n.publishes {
		pub = append(pub, t+".*")
	}
	pub = append(pub, n.calls...)
	if n.provisions {
		pub = append(pub, jsAPI+".CONSUMER.CREATE."+streamAudit+".>", jsAPI+".CONSUMER.DURABLE.CREATE."+streamAudit+".*")
	}
	p := Service(name)
	sub = append(sub, p.InboxPrefix()+".>", "$SRV.>")
	sub = append(sub, n.serves...)
	for _, s := range n.serves {
		if slices.Contains(agentAPI, s) {
			sub = append(sub, broker.AgentSubject("*", s))
		}
	}
	perms := jwt.Permissions{Resp: &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}}
	perms.Pub.Allow.Add(dedupe(pub)...)
	for _, d := range n.resets {
		perms.Pub.Allow.Add(jsAPI + ".CONSUMER.DELETE." + streamAudit + "." + d)
	}
	// Its own durables (named after it) it may reset to their ack floor at
	// start, to take back what a dead instance left unacknowledged.
	for stream, names := range Durables {
		for _, d := range names {
			if owns(name, d) {
				perms.Pub.Allow.Add(jsAPI + ".CONSUMER.RESET." + stream + "." + d)
			}
		}
	}
	for stream, names := range Durables {
		for _, d := range names {
			if stream == streamAudit && slices.Contains(n.resets, d) {
				continue
			}
			perms.Pub.Deny.Add(jsAPI + ".CONSUMER.DELETE." + stream + "." + d)
			if !owns(name, d) {
				// Another service's durable: neither (re)created, which
				// could change its filter or position, nor reset.
				perms.Pub.Deny.Add(jsAPI+".CONSUMER.CREATE."+stream+"."+d, jsAPI+".CONSUMER.CREATE."+stream+"."+d+".>",
					jsAPI+".CONSUMER.DURABLE.CREATE."+stream+"."+d)
			}
		}
	}
	perms.Sub.Allow.Add(dedupe(sub)...)
	return perms, true
}

// owns reports whether durable d is service name's: its durables are named
// after it ("approval", "approval-timeouts").
func owns(name, d string) bool { return d == name || strings.HasPrefix(d, name+"-") }

func dedupe(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
