package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
)

// The approver console: server-rendered pages (html/template), one static
// script, and plain HTML forms for every action, each carrying the
// session's CSRF token. Without the script a form is answered with a
// redirect and a message on the next page; the script posts the same form
// with fetch (Accept: application/json) and shows the answer in place, so
// that acting on one request never drops what is typed elsewhere.

// pageData is what the console's templates render.
type pageData struct {
	Approver    *config.Approver
	Admin       bool
	CSRF        string
	Flash       *flash
	Now         time.Time
	Only        string // the single request shown (links from notifications)
	Action      string // approve or deny, from a notification link
	Draft       *draft // what the approver had typed, shown again
	Decided     *DecisionView
	Gone        string // why the single request is not waiting, if not decided
	Pending     []approval.PendingView
	Grants      []GrantView
	Revocations []RevocationView
	Suspensions []SuspensionView
	// Failing are the revocations that keep failing (the revokers'
	// reports).
	Failing   []metrics.FailingRevocation
	Decisions []DecisionView
	Delivered int64
	Failed    int64
	Dropped   int64
}

// loginData is what login.html renders.
type loginData struct {
	CSRF   string
	Error  string
	Kind   string // of Error's message: flashError or, for an ended session, "warn"
	Next   string
	Return string // where Next leads, in words
	Draft  *draft
}

func (w *Console) render(rw http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := w.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		w.log.Error().Err(err).Str("template", name).Msg("render")
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		rw.WriteHeader(http.StatusInternalServerError)
		_, _ = rw.Write([]byte(internalErrorPage))
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	_, _ = buf.WriteTo(rw)
}

// internalErrorPage is the page when a template itself fails: still the
// console's style, without anything that could fail again.
const internalErrorPage = `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
	`<meta name="viewport" content="width=device-width, initial-scale=1"><title>Error · JIT approver console</title>` +
	`<link rel="stylesheet" href="/console/static/console.css"></head><body class="login"><main>` +
	`<h1>JIT approver console</h1><p class="flash error" role="alert">Something went wrong on the server; nothing was changed. ` +
	`<a href="/console/">Back to the console</a></p></main></body></html>`

// enter admits a console call through the service's gate (Approvals.Enter);
// if the service is not running it answers 503 with a page, saying for an
// action that nothing was done, and ok is false.
func (w *Console) enter(rw http.ResponseWriter, r *http.Request, action bool) (ctx context.Context, done func(), ok bool) {
	if ctx, done, ok = w.core.Enter(r.Context()); !ok {
		msg := "The approval service is not running; retry in a moment."
		if action {
			msg = "The approval service is not running; nothing was done. Retry in a moment."
		}
		w.errorPage(rw, r, http.StatusServiceUnavailable, events.CodeUnavailable, "Not running", msg)
	}
	return ctx, done, ok
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return next
}

func (w *Console) loginPage(rw http.ResponseWriter, r *http.Request) {
	if sess, _ := w.sessionOf(r); sess != nil {
		http.Redirect(rw, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	w.renderLogin(rw, r, http.StatusOK, r.URL.Query().Get("next"), nil, "")
}

// renderLogin shows the sign-in form with a fresh login CSRF token, set
// both in a cookie and in the form (double submit), carrying next and a
// draft through the sign-in.
func (w *Console) renderLogin(rw http.ResponseWriter, r *http.Request, status int, next string, d *draft, msg string) {
	tok := randomToken()
	setCookie(rw, loginCookie, tok, "/console/login", 600)
	data := loginData{CSRF: tok, Error: msg, Kind: flashError, Next: safeNext(next), Draft: d}
	if status == http.StatusUnauthorized && d != nil {
		data.Kind = "warn" // not a mistake of the approver's
	}
	if id, ok := strings.CutPrefix(data.Next, "/console/requests/"); ok {
		id, _, _ = strings.Cut(id, "?")
		data.Return = "request " + id
	} else if data.Next != "/console/" {
		data.Return = data.Next
	}
	w.render(rw, status, "login.html", data)
}

// loginDraft reads the draft a sign-in form carries (see login.html).
func loginDraft(r *http.Request) *draft {
	id := r.PostFormValue("draft_request")
	if !events.ValidID(id) {
		return nil
	}
	d := &draft{RequestID: id, Action: r.PostFormValue("draft_action"),
		Comment:  truncate(r.PostFormValue("draft_comment"), approval.MaxCommentLength),
		Duration: truncate(r.PostFormValue("draft_duration"), 32)}
	if d.Action != "approve" && d.Action != "deny" {
		return nil
	}
	if r.PostFormValue("draft_narrow") == "1" {
		d.Perms = append([]string{}, r.PostForm["draft_perm"]...)
	}
	return d
}

func (w *Console) login(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		w.renderLogin(rw, r, http.StatusBadRequest, "", nil, "The sign-in form could not be read; try again.")
		return
	}
	next, d := r.PostFormValue("next"), loginDraft(r)
	c, err := r.Cookie(loginCookie)
	if err != nil || c.Value == "" || !sameOrigin(r) || r.PostFormValue("csrf") != c.Value {
		w.renderLogin(rw, r, http.StatusForbidden, next, d, "The sign-in form expired; try again.")
		return
	}
	ctx, done, ok := w.enter(rw, r, false)
	if !ok {
		return
	}
	defer done()
	p := presented(r, r.PostFormValue("token"))
	p.Missing = "console sign-in with an unknown approver token"
	p.Unknown = p.Missing
	a, err := w.core.Authenticate(ctx, p, events.Rejection{Actor: anonymousApprover})
	if err != nil {
		_ = w.refusedToken(ctx, rw, err)
		if errors.As(err, new(*service.LockedOut)) {
			w.renderLogin(rw, r, http.StatusTooManyRequests, next, d, "Too many failed sign-ins from your address; try again in a minute.")
			return
		}
		w.renderLogin(rw, r, http.StatusUnauthorized, next, d, "That token is not recognised.")
		return
	}
	sess := w.newSession(a, r.PostFormValue("token"))
	if d != nil {
		w.setDraft(sess, d)
	}
	setCookie(rw, loginCookie, "", "/console/login", -1)
	setCookie(rw, sessionCookie, sess.id, "/", int(sessionTTL/time.Second))
	w.log.Info().Str("approver", a.Name).Msg("console sign-in")
	http.Redirect(rw, r, safeNext(next), http.StatusSeeOther)
}

func (w *Console) logout(rw http.ResponseWriter, r *http.Request, sess *session, _ *config.Approver) {
	w.dropSession(sess.id)
	setCookie(rw, sessionCookie, "", "/", -1)
	http.Redirect(rw, r, "/console/login", http.StatusSeeOther)
}

// data loads everything the console shows for approver a.
func (w *Console) data(ctx context.Context, sess *session, a *config.Approver) (pageData, error) {
	c := w.core.Counters()
	d := pageData{Approver: a, Admin: isAdmin(a), CSRF: sess.csrf, Now: w.now().UTC(),
		Delivered: c.Delivered.Load(), Failed: c.Failed.Load(), Dropped: c.Dropped.Load()}
	var err error
	if d.Pending, err = w.core.Pending(ctx, a); err != nil {
		return d, err
	}
	if d.Grants, err = w.activeGrants(ctx); err != nil {
		return d, err
	}
	if d.Revocations, err = w.recentRevocations(ctx); err != nil {
		return d, err
	}
	if d.Suspensions, err = w.suspensions(ctx); err != nil {
		return d, err
	}
	d.Failing = w.failing.current(ctx)
	w.hist.ensure(ctx)
	d.Decisions = w.hist.recent(w.now(), recentLimit)
	return d, nil
}

func (w *Console) show(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver, tmpl string, adjust func(context.Context, *pageData)) {
	ctx, done, ok := w.enter(rw, r, false)
	if !ok {
		return
	}
	defer done()
	d, err := w.data(ctx, sess, a)
	if err != nil {
		w.log.Error().Err(err).Msg("console data")
		w.errorPage(rw, r, http.StatusServiceUnavailable, events.CodeUnavailable, "Could not read the current state",
			"The console could not read the current state from the broker; retry in a moment.")
		return
	}
	if adjust != nil {
		adjust(ctx, &d)
	}
	// The script keeps its forms' tokens current from this header.
	rw.Header().Set("X-CSRF-Token", sess.csrf)
	w.render(rw, http.StatusOK, tmpl, d)
}

func (w *Console) page(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	w.show(rw, r, sess, a, "page.html", func(_ context.Context, d *pageData) {
		d.Flash = w.takeFlash(sess)
		w.keepDraft(sess, d)
	})
}

// keepDraft puts the session's draft on the page if its request is shown.
func (w *Console) keepDraft(sess *session, d *pageData) {
	w.mu.Lock()
	dr := sess.draft
	w.mu.Unlock()
	switch {
	case dr == nil:
	case slices.ContainsFunc(d.Pending, func(p approval.PendingView) bool { return p.RequestID == dr.RequestID }):
		d.Draft = w.takeDraft(sess, dr.RequestID)
		if d.Flash == nil {
			d.Flash = &flash{Kind: flashInfo, Text: "What you had typed is back; nothing was sent yet. Check it and answer again."}
		}
	case d.Only == dr.RequestID:
		// The request was answered or timed out meanwhile: the page says how.
		w.takeDraft(sess, dr.RequestID)
	}
}

// live renders the live part of the page alone; the script swaps it in
// when the server says something changed.
func (w *Console) live(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	only, act := r.URL.Query().Get("only"), r.URL.Query().Get("action")
	w.show(rw, r, sess, a, "live", func(ctx context.Context, d *pageData) {
		if only != "" {
			w.single(ctx, d, only)
			d.Action = actionFor(d, act)
		}
	})
}

// single narrows d to request id: the request if it waits, else how it
// ended.
func (w *Console) single(ctx context.Context, d *pageData, id string) {
	d.Only = id
	d.Pending = slices.DeleteFunc(d.Pending, func(p approval.PendingView) bool { return p.RequestID != id })
	if len(d.Pending) > 0 {
		return
	}
	if dv, ok := w.hist.decision(id); ok {
		d.Decided = &dv
		return
	}
	if !events.ValidID(id) {
		d.Gone = "There is no request " + id + "."
		return
	}
	d.Gone = capitalize(w.core.Gone(ctx, id).Message) + "."
}

// requestPage shows one request: where a notification's approve and deny
// links lead, and where a sign-in from a request's form returns.
func (w *Console) requestPage(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	id := r.PathValue("id")
	w.show(rw, r, sess, a, "page.html", func(ctx context.Context, d *pageData) {
		d.Flash = w.takeFlash(sess)
		w.single(ctx, d, id)
		d.Action = actionFor(d, r.URL.Query().Get("action"))
		w.keepDraft(sess, d)
	})
}

// actionFor is the action a notification link asks for (approve or
// deny), if the single request shown waits and the approver may answer it.
func actionFor(d *pageData, act string) string {
	if (act == "approve" || act == "deny") && len(d.Pending) == 1 && d.Pending[0].CanAnswer {
		return act
	}
	return ""
}

// actionLink sends a GET of an action's URL (a link copied from a form) to
// the request's page.
func (w *Console) actionLink(rw http.ResponseWriter, r *http.Request, _ *session, _ *config.Approver) {
	id, act := r.PathValue("id"), r.PathValue("action")
	if !events.ValidID(id) || (act != "approve" && act != "deny") {
		w.notFound(rw, r)
		return
	}
	http.Redirect(rw, r, "/console/requests/"+id+"?action="+act, http.StatusSeeOther)
}

// notFound is the console's page for a path it does not serve.
func (w *Console) notFound(rw http.ResponseWriter, r *http.Request) {
	w.errorPage(rw, r, http.StatusNotFound, events.CodeNotFound, "Not found", "The console has no page at "+r.URL.Path+".")
}

// outcome is an action's answer to the console: a message for the
// approver, and the status and code of a refusal.
type outcome struct {
	status int
	code   string
	flash
}

// refusalOf turns an action's error into what the console shows.
func refusalOf(err error) outcome {
	var ae *broker.APIError
	if errors.As(err, &ae) {
		return outcome{status: ae.Status, code: ae.Code, flash: flash{Kind: flashError, Text: "Refused: " + capitalize(ae.Message) + "."}}
	}
	return outcome{status: http.StatusServiceUnavailable, code: events.CodeUnavailable,
		flash: flash{Kind: flashError, Text: "Failed: the console could not complete this; nothing was changed. Retry in a moment."}}
}

// respond answers an action: JSON for the script, else the message on the
// next page (and, for a refused answer, what was typed) and a redirect.
func (w *Console) respond(rw http.ResponseWriter, r *http.Request, sess *session, o outcome) {
	if wantsJSON(r) {
		status := http.StatusOK
		if o.Kind == flashError {
			status = o.status
		}
		writeJSON(rw, status, map[string]any{"status": status, "code": o.code, "kind": o.Kind, "message": o.Text})
		return
	}
	if o.Kind == flashError {
		if d := draftOf(r); d != nil {
			w.setDraft(sess, d)
		}
	}
	w.setFlash(sess, o.flash)
	back := safeNext(r.PostFormValue("back"))
	http.Redirect(rw, r, back, http.StatusSeeOther)
}

// duration writes ms as people do ("10m").
func duration(ms int64) string { return events.ShortDuration(events.MSDuration(ms)) }

// answerMessage says what an answer did, in the approver's words.
func answerMessage(kind string, res approval.Answered) flash {
	perms := strings.Join(res.Permissions, ", ")
	switch {
	case kind == events.OutcomeDenied:
		return flash{Kind: flashSuccess, Text: fmt.Sprintf("Denied: %s does not get %s.", res.Agent, perms)}
	case res.Outcome == events.OutcomePending:
		more := "1 more approver approves"
		if n := res.Required - res.Votes; n != 1 {
			more = fmt.Sprintf("%d more approvers approve", n)
		}
		return flash{Kind: flashInfo, Text: fmt.Sprintf("Your approval is recorded (%d of %d): %s gets %s for %s once %s.",
			res.Votes, res.Required, res.Agent, perms, duration(res.DurationMS), more)}
	case res.Outcome == events.OutcomeDenied:
		return flash{Kind: flashInfo, Text: fmt.Sprintf("Denied: the approvers of %s's request approved no permission in common.", res.Agent)}
	}
	return flash{Kind: flashSuccess, Text: fmt.Sprintf("Approved: %s gets %s for %s.", res.Agent, perms, duration(res.DurationMS))}
}

func (w *Console) formAnswer(kind string) sessionHandler {
	return func(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
		ctx, done, ok := w.enter(rw, r, true)
		if !ok {
			return
		}
		defer done()
		in := broker.ApproveInput{RequestID: r.PathValue("id"), Comment: r.PostFormValue("comment")}
		if kind == events.OutcomeApproved {
			in.Permissions = r.PostForm["perm"]
			if r.PostFormValue("narrow") == "1" && len(in.Permissions) == 0 {
				w.respond(rw, r, sess, outcome{status: http.StatusBadRequest, code: events.CodeMalformed, flash: flash{Kind: flashError,
					Text: "Refused: tick at least one permission to approve, or deny the request."}})
				return
			}
			// What the form shows is what is approved: the duration is sent
			// as typed, even when it equals the request's.
			in.Duration = strings.TrimSpace(r.PostFormValue("duration"))
		}
		res, err := w.core.Answer(ctx, a, in, kind)
		if err != nil {
			var ae *broker.APIError
			if !errors.As(err, &ae) {
				w.log.Error().Err(err).Msg("console answer")
			}
			w.respond(rw, r, sess, refusalOf(err))
			return
		}
		w.respond(rw, r, sess, outcome{flash: answerMessage(kind, res)})
	}
}

func (w *Console) formRevoke(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	ctx, done, ok := w.enter(rw, r, true)
	if !ok {
		return
	}
	defer done()
	id := r.PathValue("id")
	var g *GrantView
	if grants, err := w.activeGrants(ctx); err == nil {
		if i := slices.IndexFunc(grants, func(v GrantView) bool { return v.GrantID == id }); i >= 0 {
			g = &grants[i]
		}
	}
	res, err := w.core.Revoke(ctx, a, id, r.PostFormValue("comment"))
	if err != nil {
		w.respond(rw, r, sess, refusalOf(err))
		return
	}
	msg := "Revoked: " + res.Agent + "'s grant " + id + " has ended."
	if g != nil {
		msg = fmt.Sprintf("Revoked: %s no longer has %s.", g.Agent, strings.Join(g.Permissions, ", "))
	}
	w.respond(rw, r, sess, outcome{flash: flash{Kind: flashSuccess, Text: msg}})
}

func (w *Console) formReinstate(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	ctx, done, ok := w.enter(rw, r, true)
	if !ok {
		return
	}
	defer done()
	agent := r.PathValue("agent")
	if _, err := w.core.Reinstate(ctx, a, agent, r.PostFormValue("comment")); err != nil {
		w.respond(rw, r, sess, refusalOf(err))
		return
	}
	w.respond(rw, r, sess, outcome{flash: flash{Kind: flashSuccess,
		Text: "Reinstated: " + agent + " is no longer suspended and may ask for access again."}})
}

// events streams server-sent events: "changed" whenever a pending request,
// grant, lease or suspension changes, or a decision is added to the
// history, so the page fetches its live part again. Comments keep idle
// connections open.
func (w *Console) events(rw http.ResponseWriter, r *http.Request, _ *session, _ *config.Approver) {
	fl, ok := rw.(http.Flusher)
	if !ok {
		w.errorPage(rw, r, http.StatusInternalServerError, "internal", "Live updates unavailable",
			"This server cannot stream live updates; reload the page to see changes.")
		return
	}
	ch, unsubscribe, ok := w.hub.subscribe()
	if !ok {
		w.errorPage(rw, r, http.StatusServiceUnavailable, events.CodeUnavailable, "Not running", "The approval service is stopping.")
		return
	}
	defer unsubscribe()
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.Header().Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
	_, _ = rw.Write([]byte("retry: 2000\n: connected\n\n"))
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case _, open := <-ch:
			if !open {
				return
			}
			if _, err := rw.Write([]byte("event: changed\ndata: {}\n\n")); err != nil {
				return
			}
			fl.Flush()
		case <-ping.C:
			if _, err := rw.Write([]byte(": ping\n\n")); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
