package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/broker"
)

// errTampered ends verify with exit 1 after it printed the first finding.
var errTampered = fmt.Errorf("audit trail not whole: %w", errRefused)

// auditExport writes every message of the audit stream (or those stored
// since --since) in the export format (package audit's MarshalRecord), one
// per line: an exact copy that verify --file checks later.
func (a *app) auditExport(ctx context.Context, args []string) error {
	fs := a.flags()
	since := fs.String("since", "", "only messages of the last DURATION (e.g. 24h) or since TIME (RFC 3339)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	r, err := sinceRead(*since)
	if err != nil {
		return err
	}
	return a.readStream(ctx, r, func(rec audit.Record) error {
		line, err := audit.MarshalRecord(rec)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(append(line, '\n'))
		return err
	})
}

// auditVerify re-reads the audit stream (or an export) and checks it
// against the signed checkpoints in it: exit 0 whole, 1 with the first
// message deleted, altered, inserted or reordered, 2 on errors.
func (a *app) auditVerify(ctx context.Context, args []string) error {
	fs := a.flags()
	since := fs.String("since", "", "only the messages of the last DURATION (e.g. 24h) or since TIME (RFC 3339)")
	file := fs.String("file", "", "verify this export (jitctl audit export) instead of the stream; - reads stdin")
	var keyFiles listFlag
	fs.Var(&keyFiles, "key", "the auditor's public key (the .pub file, or its base64 as logged); repeat for rotated keys")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if len(keyFiles) == 0 {
		return usagef("--key is required: the auditor's public key (e.g. <data-dir>/keys/audit-ed25519.pub)")
	}
	keys, err := audit.LoadKeys(keyFiles...)
	if err != nil {
		return err
	}
	v := audit.NewVerifier(keys)
	add := func(r audit.Record) error { v.Add(r); return nil }
	if *file != "" {
		if *since != "" {
			return usagef("--since reads the stream; an export is verified whole")
		}
		var in io.Reader = os.Stdin
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		if err := audit.ReadRecords(in, add); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
	} else {
		r, err := sinceRead(*since)
		if err != nil {
			return err
		}
		if err := a.readStream(ctx, r, add); err != nil {
			return err
		}
	}
	res := v.Result()
	if a.json {
		out := map[string]any{"whole": res.OK(), "records": res.Records, "checkpoints": res.Checkpoints,
			"verified": res.Verified, "uncovered": res.Uncovered, "before_first": res.BeforeFirst,
			"first_seq": res.FirstSeq, "last_seq": res.LastSeq, "covered_through": res.CoveredThrough,
			"key_ids": res.KeyIDs, "findings": len(res.Findings)}
		if !res.CoveredUntil.IsZero() {
			out["covered_until"] = res.CoveredUntil
		}
		if len(res.Findings) > 0 {
			out["first"] = res.Findings[0]
		}
		if err := a.printJSON(out); err != nil {
			return err
		}
	} else {
		a.printVerify(res)
	}
	if !res.OK() {
		return errTampered
	}
	return nil
}

func (a *app) printVerify(res audit.Result) {
	switch {
	case res.Records == 0:
		a.printf("whole: nothing to verify\n")
		return
	case len(res.Findings) > 0:
		f := res.Findings[0]
		what := f.Kind
		if f.Count > 1 {
			what = fmt.Sprintf("%s (%d messages)", f.Kind, f.Count)
		}
		name := ""
		if f.EventID != "" {
			name = fmt.Sprintf(" %s %s", f.Type, f.EventID)
		}
		a.printf("TAMPERED: %s: seq %d%s (message %d of the input): %s\n", what, f.Seq, name, f.Position, f.Detail)
		if n := len(res.Findings) - 1; n > 0 {
			a.printf("and %d more finding(s) after it\n", n)
		}
		return
	case res.Checkpoints == 0:
		a.printf("NOT VERIFIED: %d messages (seq %d–%d) and no checkpoint signed by the given key(s): is the auditor running?\n",
			res.Records, res.FirstSeq, res.LastSeq)
		return
	}
	a.printf("whole: %d messages, seq %d–%d; %d checkpoint(s) signed by key %s cover them through seq %d (stored %s)\n",
		res.Records, res.FirstSeq, res.LastSeq, res.Checkpoints, strings.Join(res.KeyIDs, ", "),
		res.CoveredThrough, timeText(res.CoveredUntil))
	if res.BeforeFirst > 0 {
		a.printf("%d message(s) before the first checkpoint's range are not verified\n", res.BeforeFirst)
	}
	if res.Uncovered > 0 {
		a.printf("%d message(s) after seq %d are not yet in a checkpoint\n", res.Uncovered, res.CoveredThrough)
	}
}

// sinceRead is the direct read of the whole stream, or of what was stored
// since --since.
func sinceRead(since string) (broker.DirectRead, error) {
	var r broker.DirectRead
	if since != "" {
		t, err := parseSince(since, time.Now())
		if err != nil {
			return r, err
		}
		r.Since = t
	}
	return r, nil
}

// readStream reads the audit stream with direct get (no consumer) and
// gives each message as an audit.Record.
func (a *app) readStream(ctx context.Context, r broker.DirectRead, fn func(audit.Record) error) error {
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	r.Prefix = broker.APIPrefixOf(js)
	err = broker.ReadDirect(ctx, nc, broker.AuditStream, r, func(m broker.StoredMsg) error {
		return fn(audit.Record{Seq: m.Seq, Time: m.Time, Subject: m.Subject, Header: m.Header, Body: m.Data})
	})
	if err != nil && !errors.Is(err, errRefused) {
		return fmt.Errorf("read %s: %w", broker.AuditStream, err)
	}
	return err
}
