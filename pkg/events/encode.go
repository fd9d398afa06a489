package events

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	jsoniter "github.com/json-iterator/go"
)

// Event is a CloudEvent (sdk-go v2's event model).
type Event = event.Event

// ContentType is the content type of a structured-mode CloudEvent.
const ContentType = "application/cloudevents+json"

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a new random id with the given prefix, e.g. NewID("req")
// gives "req_" followed by 26 characters: 128 bits from crypto/rand. The
// result is a ValidID.
func NewID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	return prefix + "_" + idEncoding.EncodeToString(b[:])
}

// GrantIDFor derives the grant id of a request, so that handling the same
// approval twice can only ever name the same grant.
func GrantIDFor(requestID string) string {
	if i := strings.IndexByte(requestID, '_'); i >= 0 {
		return "grt" + requestID[i:]
	}
	return "grt_" + requestID
}

// Option sets an optional attribute on a new event.
type Option func(*Event)

// WithRequestID sets the requestid extension: all events of one request
// carry it.
func WithRequestID(id string) Option {
	return func(e *Event) {
		if id != "" {
			e.SetExtension(ExtRequestID, id)
		}
	}
}

// WithGrantID sets the grantid extension.
func WithGrantID(id string) Option {
	return func(e *Event) {
		if id != "" {
			e.SetExtension(ExtGrantID, id)
		}
	}
}

// WithTime sets the event time (default: now).
func WithTime(t time.Time) Option { return func(e *Event) { e.SetTime(t) } }

// New builds a CloudEvent of type typ from source (a service name, prefixed
// with SourcePrefix) about agent, with the given id and JSON data. The id is
// also the broker's de-duplication key: callers pass a deterministic id for
// an event that a redelivery may publish again.
func New(id, typ, source, agent string, data any, opts ...Option) (Event, error) {
	e := cloudevents.NewEvent(SpecVersion)
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(SourcePrefix + source)
	if agent != "" {
		e.SetSubject(agent)
	}
	e.SetTime(time.Now().UTC())
	for _, o := range opts {
		o(&e)
	}
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return e, nil
}

// Encode returns the structured-mode JSON of e. It calls the event's own
// marshaller: json.Marshal would re-validate and compact its output, a
// third of the cost.
func Encode(e Event) ([]byte, error) { return e.MarshalJSON() }

// Decode parses a structured-mode CloudEvent (JSON) and validates it: size,
// CloudEvents attributes, and that its type is one of AllTypes. It returns
// ErrTooLarge, ErrMalformed or ErrUnknownType, wrapped with detail.
func Decode(body []byte) (Event, error) {
	if len(body) > MaxEventSize {
		return Event{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), MaxEventSize)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return Event{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	// json.Valid refuses anything that is not exactly one JSON value, as
	// json.Unmarshal would; calling the event's own parser then saves
	// json.Unmarshal's second pass over the body.
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v) // only for its message
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := cloudevents.NewEvent()
	if err := e.UnmarshalJSON(body); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return e, check(e)
}

// DecodeBinary builds a CloudEvent from binary-mode parts: attributes in
// "ce-" headers (as nats.Header, http.Header or any map of header values)
// and the data as body. It validates as Decode does.
func DecodeBinary(headers map[string][]string, body []byte) (Event, error) {
	if len(body) > MaxEventSize {
		return Event{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), MaxEventSize)
	}
	get := func(k string) string {
		for hk, v := range headers {
			if strings.EqualFold(hk, k) && len(v) > 0 {
				return v[0]
			}
		}
		return ""
	}
	if get("ce-specversion") != SpecVersion {
		return Event{}, fmt.Errorf("%w: ce-specversion must be %s", ErrMalformed, SpecVersion)
	}
	e := cloudevents.NewEvent(SpecVersion)
	for hk, v := range headers {
		if len(v) == 0 || len(hk) <= 3 || !strings.EqualFold(hk[:3], "ce-") {
			continue
		}
		name := strings.ToLower(hk[3:])
		switch name {
		case "specversion":
		case "id":
			e.SetID(v[0])
		case "type":
			e.SetType(v[0])
		case "source":
			e.SetSource(v[0])
		case "subject":
			e.SetSubject(v[0])
		case "dataschema":
			e.SetDataSchema(v[0])
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v[0])
			if err != nil {
				return Event{}, fmt.Errorf("%w: ce-time: %v", ErrMalformed, err)
			}
			e.SetTime(t)
		default:
			if err := e.Context.SetExtension(name, v[0]); err != nil {
				return Event{}, fmt.Errorf("%w: extension %s: %v", ErrMalformed, name, err)
			}
		}
	}
	ct := get("content-type")
	if ct == "" {
		ct = cloudevents.ApplicationJSON
	}
	e.SetDataContentType(ct)
	e.DataEncoded = append([]byte(nil), body...)
	return e, check(e)
}

func check(e Event) error {
	if err := e.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// sdk-go also accepts CloudEvents 0.3; the system speaks 1.0 only.
	if v := e.SpecVersion(); v != SpecVersion {
		return fmt.Errorf("%w: specversion %q, want %s", ErrMalformed, v, SpecVersion)
	}
	for _, t := range AllTypes {
		if e.Type() == t {
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrUnknownType, e.Type())
}

// DataAs decodes the event's JSON data into a T. Unknown fields are refused,
// so that a misspelt field in untrusted input is an error, not a silent
// default.
func DataAs[T any](e Event) (T, error) {
	var v T
	if len(e.Data()) == 0 {
		return v, fmt.Errorf("%w: %s event has no data", ErrInvalid, e.Type())
	}
	data := e.Data()
	// The common case, valid data, decodes with jsoniter (which the
	// CloudEvents SDK already uses for the envelope): 3× faster here than a
	// json.Decoder. Syntax is checked first by the standard library, and
	// anything jsoniter refuses is decoded again by encoding/json, whose
	// verdict and message stand, so a refusal reads as it always has.
	// FuzzDataAsAgrees checks that both accept the same data.
	// Invalid UTF-8 takes the slow path too: encoding/json replaces it with
	// U+FFFD, jsoniter would keep the bytes.
	if utf8.Valid(data) && json.Valid(data) {
		if err := strictJSON.Unmarshal(data, &v); err == nil {
			return v, nil
		}
		v = *new(T)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, fmt.Errorf("%w: %s data: %v", ErrInvalid, e.Type(), err)
	}
	if dec.More() {
		return v, fmt.Errorf("%w: %s data: data after the JSON value", ErrInvalid, e.Type())
	}
	return v, nil
}

// strictJSON decodes like encoding/json (field names matched without case,
// the types' own UnmarshalJSON) but refuses unknown fields.
var strictJSON = jsoniter.Config{
	EscapeHTML:             true,
	ValidateJsonRawMessage: true,
	DisallowUnknownFields:  true,
}.Froze()

// RequestID returns the event's requestid extension, or "".
func RequestID(e Event) string { return extString(e, ExtRequestID) }

// GrantID returns the event's grantid extension, or "".
func GrantID(e Event) string { return extString(e, ExtGrantID) }

func extString(e Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}
