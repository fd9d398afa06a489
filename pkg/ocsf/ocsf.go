// Package ocsf maps the JIT system's CloudEvents to OCSF 1.1.0 events
// (Open Cybersecurity Schema Framework), so that a SIEM reads them in its
// own classes: authorizations and privilege changes in Identity & Access
// Management, guardrails as Detection Findings. The mapping is documented
// in docs/siem.md; every event type has one (TestEveryTypeIsMapped).
package ocsf

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Version is the OCSF schema version the events follow.
const Version = "1.1.0"

// Product names the JIT system in metadata.product.
var Product = ProductInfo{Name: "jit", VendorName: "agentjit"}

// Class is an OCSF event class with the activity a JIT event maps to.
type Class struct {
	UID          int
	Name         string
	CategoryUID  int
	CategoryName string
}

// The classes used.
var (
	AuthorizeSession = Class{3003, "Authorize Session", 3, "Identity & Access Management"}
	UserAccess       = Class{3005, "User Access Management", 3, "Identity & Access Management"}
	AccountChange    = Class{3001, "Account Change", 3, "Identity & Access Management"}
	EntityManagement = Class{3004, "Entity Management", 3, "Identity & Access Management"}
	DetectionFinding = Class{2004, "Detection Finding", 2, "Findings"}
	BaseEvent        = Class{0, "Base Event", 0, "Uncategorized"}
)

// Mapping is the class and activity of one event type.
type Mapping struct {
	Class        Class
	ActivityID   int
	ActivityName string
}

// Mappings is the class and activity of every event type.
var Mappings = map[string]Mapping{
	events.TypeRequested:      {AuthorizeSession, 99, "Request"},
	events.TypeDecided:        {AuthorizeSession, 1, "Assign Privileges"},
	events.TypeApproved:       {AuthorizeSession, 99, "Approve"},
	events.TypeWithdrawn:      {AuthorizeSession, 99, "Withdraw"},
	events.TypeRejected:       {AuthorizeSession, 99, "Reject"},
	events.TypeGranted:        {UserAccess, 1, "Assign Privileges"},
	events.TypeRevoked:        {UserAccess, 2, "Revoke Privileges"},
	events.TypeGuardrailFired: {DetectionFinding, 1, "Create"},
	events.TypeSuspended:      {AccountChange, 5, "Disable"},
	events.TypeReinstated:     {AccountChange, 2, "Enable"},
	events.TypeConfigApplied:  {EntityManagement, 3, "Update"},
	events.TypeNotification:   {BaseEvent, 99, "Notify"},
	events.TypeCheckpoint:     {BaseEvent, 99, "Checkpoint"},
}

// Status ids.
const (
	StatusUnknown = 0
	StatusSuccess = 1
	StatusFailure = 2
	StatusOther   = 99
)

// Severity ids.
const (
	SeverityInformational = 1
	SeverityLow           = 2
	SeverityMedium        = 3
	SeverityHigh          = 4
)

var severityNames = map[int]string{1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
var statusNames = map[int]string{0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}

// User type ids (OCSF 1.1.0 user.type_id).
const (
	UserTypeUser   = 1
	UserTypeSystem = 3
	UserTypeOther  = 99
)

// Event is one OCSF event: the base attributes, and those of the classes
// used. Times are milliseconds since the epoch.
type Event struct {
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	TypeUID      int    `json:"type_uid"`
	TypeName     string `json:"type_name"`
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity"`
	StatusID     int    `json:"status_id"`
	Status       string `json:"status"`
	StatusCode   string `json:"status_code,omitempty"`
	StatusDetail string `json:"status_detail,omitempty"`
	Time         int64  `json:"time"`
	Message      string `json:"message,omitempty"`
	Metadata     Meta   `json:"metadata"`

	Actor       *Actor       `json:"actor,omitempty"`
	User        *User        `json:"user,omitempty"`
	Privileges  []string     `json:"privileges,omitempty"`
	Comment     string       `json:"comment,omitempty"`
	Entity      *Entity      `json:"entity,omitempty"`
	FindingInfo *FindingInfo `json:"finding_info,omitempty"`
	Resources   []Resource   `json:"resources,omitempty"`
	IsAlert     bool         `json:"is_alert,omitempty"`
	// Unmapped carries the CloudEvent's attributes and data as they are.
	Unmapped map[string]any `json:"unmapped,omitempty"`
}

// Meta is OCSF metadata.
type Meta struct {
	Version        string      `json:"version"`
	Product        ProductInfo `json:"product"`
	UID            string      `json:"uid"`
	CorrelationUID string      `json:"correlation_uid,omitempty"`
	EventCode      string      `json:"event_code"`
	LoggedTime     int64       `json:"logged_time,omitempty"`
	Sequence       uint64      `json:"sequence,omitempty"`
}

// ProductInfo is metadata.product.
type ProductInfo struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
}

// Actor is who caused the event.
type Actor struct {
	User *User `json:"user,omitempty"`
}

// User is an OCSF user: an agent, an approver, or a system component.
type User struct {
	UID    string  `json:"uid"`
	Name   string  `json:"name"`
	TypeID int     `json:"type_id"`
	Type   string  `json:"type"`
	Groups []Group `json:"groups,omitempty"`
}

// Group is an approver's role.
type Group struct {
	Name string `json:"name"`
}

// Entity is Entity Management's managed entity.
type Entity struct {
	UID     string `json:"uid,omitempty"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Version string `json:"version,omitempty"`
}

// FindingInfo describes a detection.
type FindingInfo struct {
	UID         string   `json:"uid"`
	Title       string   `json:"title"`
	Desc        string   `json:"desc,omitempty"`
	Types       []string `json:"types,omitempty"`
	CreatedTime int64    `json:"created_time,omitempty"`
}

// Resource is a finding's affected resource: the agent.
type Resource struct {
	UID  string `json:"uid"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// From maps e, stored at stream sequence seq and broker time stored (both
// optional), to OCSF. An event type without a mapping, or data that does
// not decode, is an error.
func From(e events.Event, seq uint64, stored time.Time) (Event, error) {
	m, ok := Mappings[e.Type()]
	if !ok {
		return Event{}, fmt.Errorf("%w: no OCSF mapping for %q", events.ErrUnknownType, e.Type())
	}
	o := Event{
		ClassUID: m.Class.UID, ClassName: m.Class.Name, CategoryUID: m.Class.CategoryUID, CategoryName: m.Class.CategoryName,
		ActivityID: m.ActivityID, ActivityName: m.ActivityName,
		TypeUID: m.Class.UID*100 + m.ActivityID, TypeName: m.Class.Name + ": " + m.ActivityName,
		SeverityID: SeverityInformational, StatusID: StatusSuccess,
		Time: ms(e.Time()),
		Metadata: Meta{Version: Version, Product: Product, UID: e.ID(), CorrelationUID: events.RequestID(e),
			EventCode: e.Type(), LoggedTime: ms(stored), Sequence: seq},
	}
	var data any
	if err := json.Unmarshal(e.Data(), &data); err != nil {
		return Event{}, fmt.Errorf("%w: %s data: %v", events.ErrInvalid, e.Type(), err)
	}
	ce := map[string]any{"type": e.Type(), "source": e.Source(), "specversion": e.SpecVersion()}
	if e.Subject() != "" {
		ce["subject"] = e.Subject()
	}
	for k, v := range e.Extensions() {
		ce[k] = v
	}
	o.Unmapped = map[string]any{"cloudevent": ce, "data": data}
	if err := fill(&o, e); err != nil {
		return Event{}, err
	}
	o.Severity, o.Status = severityNames[o.SeverityID], statusNames[o.StatusID]
	if o.StatusID == StatusOther && o.Status == "Other" {
		o.Status = "Pending"
	}
	return o, nil
}

// fill sets the class-specific attributes from the event's data.
func fill(o *Event, e events.Event) error {
	switch e.Type() {
	case events.TypeRequested:
		r, err := events.DataAs[events.Request](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.Privileges = actor(r.RequestedBy), agent(r.Agent), r.Permissions
		o.Message = fmt.Sprintf("%s asks for %s for %s: %s", r.Agent, strings.Join(r.Permissions, ","), r.Duration(), r.Reason)
	case events.TypeDecided:
		d, err := events.DataAs[events.Decision](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.Privileges, o.Comment = actor(d.DecidedBy), agent(d.Agent), d.Permissions, d.Comment
		o.StatusCode, o.StatusDetail = d.Outcome+"/"+d.Mode, d.Reason
		switch d.Outcome {
		case events.OutcomeDenied:
			o.StatusID = StatusFailure
		case events.OutcomePending:
			o.StatusID = StatusOther
		}
		o.Message = fmt.Sprintf("%s %s for %s (%s)", d.Outcome, strings.Join(d.Permissions, ","), d.Agent, d.Mode)
	case events.TypeApproved:
		a, err := events.DataAs[events.Approval](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.Privileges, o.Comment = actor(a.Approver), agent(a.Agent), a.Permissions, a.Comment
		o.Message = fmt.Sprintf("%s approved %s for %s (%d of %d)", a.Approver.ID, strings.Join(a.Permissions, ","), a.Agent, a.Approvals, a.Required)
	case events.TypeWithdrawn:
		w, err := events.DataAs[events.Withdrawal](e)
		if err != nil {
			return err
		}
		o.Actor, o.User = actor(w.WithdrawnBy), agent(w.Agent)
		o.Message = fmt.Sprintf("%s withdrew request %s", w.Agent, w.RequestID)
	case events.TypeRejected:
		r, err := events.DataAs[events.Rejection](e)
		if err != nil {
			return err
		}
		o.Actor, o.StatusID, o.StatusCode, o.StatusDetail, o.SeverityID = actor(r.Actor), StatusFailure, r.Code, r.Message, SeverityLow
		if r.Agent != "" {
			o.User = agent(r.Agent)
		}
		o.Message = fmt.Sprintf("refused at %s: %s", r.Stage, r.Message)
	case events.TypeGranted:
		g, err := events.DataAs[events.Grant](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.Privileges = actor(g.ApprovedBy), agent(g.Agent), g.Permissions
		o.Message = fmt.Sprintf("%s granted %s until %s (%s)", g.Agent, strings.Join(g.Permissions, ","), g.ExpiresAt.UTC().Format(time.RFC3339), g.GrantID)
	case events.TypeRevoked:
		r, err := events.DataAs[events.Revocation](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.Privileges, o.StatusCode, o.StatusDetail = actor(r.RevokedBy), agent(r.Agent), r.Permissions, r.Reason, r.Detail
		o.Message = fmt.Sprintf("%s lost %s: %s (%s)", r.Agent, strings.Join(r.Permissions, ","), r.Reason, r.GrantID)
	case events.TypeGuardrailFired:
		g, err := events.DataAs[events.GuardrailFired](e)
		if err != nil {
			return err
		}
		o.SeverityID, o.IsAlert = SeverityHigh, true
		o.FindingInfo = &FindingInfo{UID: e.ID(), Title: "guardrail " + g.Rule, Desc: g.Detail, Types: []string{"guardrail"}, CreatedTime: ms(g.FiredAt)}
		o.Resources = []Resource{{UID: g.Agent, Name: g.Agent, Type: "agent"}}
		o.Message = fmt.Sprintf("guardrail %s fired against %s: %s", g.Rule, g.Agent, g.Detail)
	case events.TypeSuspended:
		s, err := events.DataAs[events.Suspension](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.SeverityID, o.StatusDetail = actor(s.SuspendedBy), agent(s.Agent), SeverityMedium, s.Detail
		o.Message = fmt.Sprintf("%s suspended by guardrail %s; %d grant(s) revoked", s.Agent, s.Rule, len(s.RevokedGrants))
	case events.TypeReinstated:
		r, err := events.DataAs[events.Reinstatement](e)
		if err != nil {
			return err
		}
		o.Actor, o.User, o.Comment = actor(r.ReinstatedBy), agent(r.Agent), r.Comment
		o.Message = fmt.Sprintf("%s reinstated by %s", r.Agent, r.ReinstatedBy.ID)
	case events.TypeConfigApplied:
		c, err := events.DataAs[events.ConfigApplied](e)
		if err != nil {
			return err
		}
		o.Actor = actor(c.AppliedBy)
		o.Entity = &Entity{UID: c.Digest, Name: c.Source, Type: "jit configuration"}
		if c.Revision > 0 {
			o.Entity.Version = strconv.FormatUint(c.Revision, 10)
		}
		if c.Outcome == "refused" {
			o.StatusID, o.StatusDetail = StatusFailure, c.Error
		}
		o.StatusCode = c.Outcome
		o.Message = fmt.Sprintf("configuration %s %s from %s", c.Outcome, c.Digest, c.Source)
	case events.TypeNotification:
		n, err := events.DataAs[events.Notification](e)
		if err != nil {
			return err
		}
		o.User = agent(n.Agent)
		if n.Outcome == events.NotificationFailed {
			o.StatusID, o.StatusDetail = StatusFailure, n.Error
		}
		o.StatusCode = n.Outcome
		o.Message = fmt.Sprintf("notifier %s: %s after %d attempt(s)", n.Notifier, n.Outcome, n.Attempts)
	case events.TypeCheckpoint:
		c, err := events.DataAs[events.Checkpoint](e)
		if err != nil {
			return err
		}
		o.Actor = &Actor{User: &User{UID: "auditor", Name: "auditor", TypeID: UserTypeSystem, Type: "System"}}
		o.Message = fmt.Sprintf("checkpoint of %s seq %d-%d (%d messages), key %s", c.Stream, c.FirstSeq, c.LastSeq, c.Count, c.KeyID)
	}
	return nil
}

// agent is the OCSF user of an agent id.
func agent(id string) *User { return &User{UID: id, Name: id, TypeID: UserTypeOther, Type: "Agent"} }

// actor maps events.Actor: approvers are users with their roles as
// groups, agents are agents, rules, guardrails and components are system.
func actor(a events.Actor) *Actor {
	u := &User{UID: a.ID, Name: a.ID}
	switch a.Kind {
	case events.ActorAgent:
		u.TypeID, u.Type = UserTypeOther, "Agent"
	case events.ActorApprover:
		u.TypeID, u.Type = UserTypeUser, "User"
		for _, r := range a.Roles {
			u.Groups = append(u.Groups, Group{Name: r})
		}
	default:
		u.TypeID, u.Type = UserTypeSystem, "System"
		if a.Kind != "" {
			u.UID = a.Kind + ":" + a.ID
		}
	}
	return &Actor{User: u}
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
