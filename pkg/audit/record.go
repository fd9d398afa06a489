package audit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one stored message of the audit stream: what the chain covers
// (subject, headers, body) with where and when the broker stored it.
type Record struct {
	Seq     uint64
	Time    time.Time
	Subject string
	Header  map[string][]string
	Body    []byte
}

// Hash is the record's message hash (MessageHash).
func (r Record) Hash() Hash { return MessageHash(r.Subject, r.Header, r.Body) }

// ErrBadRecord is an export line that is not a record.
var ErrBadRecord = errors.New("not an audit export record")

// MaxRecordLine bounds one line of an export: a stream message is at most
// 1 MiB, which JSON string escaping can make up to six times longer.
const MaxRecordLine = 8 << 20

// exportRecord is the JSON of one export line. Body holds the message body
// when it is valid UTF-8 (JSON strings carry it exactly), BodyBase64
// otherwise, so that a copy is exact byte for byte.
type exportRecord struct {
	Seq        uint64              `json:"seq"`
	Time       time.Time           `json:"time"`
	Subject    string              `json:"subject"`
	Headers    map[string][]string `json:"headers,omitempty"`
	Body       *string             `json:"body,omitempty"`
	BodyBase64 *string             `json:"body_base64,omitempty"`
}

// MarshalRecord is one line of the export format (without the newline):
//
//	{"seq":17,"time":"…","subject":"jit.granted.market-intel",
//	 "headers":{"Content-Type":["application/cloudevents+json"],"Nats-Msg-Id":["grt_…/granted"]},
//	 "body":"{\"specversion\":\"1.0\",…}"}
//
// with "body_base64" instead of "body" for a body that is not UTF-8.
func MarshalRecord(r Record) ([]byte, error) {
	e := exportRecord{Seq: r.Seq, Time: r.Time.UTC(), Subject: r.Subject, Headers: r.Header}
	if utf8.Valid(r.Body) {
		s := string(r.Body)
		e.Body = &s
	} else {
		s := base64.StdEncoding.EncodeToString(r.Body)
		e.BodyBase64 = &s
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// DecodeRecord parses one export line strictly: one JSON object with the
// fields MarshalRecord writes and no others, a sequence, a subject, and
// exactly one of body and body_base64. Errors wrap ErrBadRecord. The input
// is untrusted: a file anyone may have edited.
func DecodeRecord(line []byte) (Record, error) {
	if len(line) > MaxRecordLine {
		return Record{}, fmt.Errorf("%w: line of %d bytes, limit %d", ErrBadRecord, len(line), MaxRecordLine)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var e exportRecord
	if err := dec.Decode(&e); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("%w: data after the JSON object", ErrBadRecord)
	}
	if e.Seq == 0 || e.Subject == "" || strings.ContainsAny(e.Subject, " \t\r\n") {
		return Record{}, fmt.Errorf("%w: needs a seq and a subject", ErrBadRecord)
	}
	r := Record{Seq: e.Seq, Time: e.Time, Subject: e.Subject, Header: e.Headers}
	switch {
	case e.Body != nil && e.BodyBase64 == nil:
		r.Body = []byte(*e.Body)
	case e.BodyBase64 != nil && e.Body == nil:
		b, err := base64.StdEncoding.DecodeString(*e.BodyBase64)
		if err != nil {
			return Record{}, fmt.Errorf("%w: body_base64: %v", ErrBadRecord, err)
		}
		r.Body = b
	default:
		return Record{}, fmt.Errorf("%w: needs exactly one of body and body_base64", ErrBadRecord)
	}
	return r, nil
}

// ReadRecords calls fn for every record of an export, in file order. Blank
// lines are skipped. An error names the line.
func ReadRecords(r io.Reader, fn func(Record) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br)
		if len(bytes.TrimSpace(line)) > 0 {
			rec, derr := DecodeRecord(line)
			if derr != nil {
				return fmt.Errorf("line %d: %w", n, derr)
			}
			if ferr := fn(rec); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
}

// readLine reads one line (without its newline) of at most MaxRecordLine
// bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRecordLine+1 {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrBadRecord, MaxRecordLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), err
	}
}
