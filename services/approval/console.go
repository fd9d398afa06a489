package approval

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// The approver console: server-rendered pages (html/template), one static
// script for countdowns and live refresh, plain HTML forms for every action
// (each carrying the session's CSRF token and answered with a redirect).

// pageData is what the console's templates render.
type pageData struct {
	Approver    *config.Approver
	Admin       bool
	CSRF        string
	Flash       string
	Error       string
	Now         time.Time
	Only        string // the single request shown (links from notifications)
	Action      string // approve or deny, from a notification link
	Next        string
	Pending     []PendingView
	Grants      []GrantView
	Revocations []RevocationView
	Suspensions []SuspensionView
	Delivered   int64
	Failed      int64
	Dropped     int64
}

func (w *web) render(rw http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := w.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		w.s.log.Error().Err(err).Str("template", name).Msg("render")
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	_, _ = buf.WriteTo(rw)
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return next
}

func (w *web) loginPage(rw http.ResponseWriter, r *http.Request) {
	if sess, _ := w.sessionOf(r); sess != nil {
		http.Redirect(rw, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	w.renderLogin(rw, r, http.StatusOK, "")
}

// renderLogin shows the sign-in form with a fresh login CSRF token, set
// both in a cookie and in the form (double submit).
func (w *web) renderLogin(rw http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	setCookie(rw, loginCookie, tok, "/console/login", 600)
	w.render(rw, status, "login.html", pageData{CSRF: tok, Error: msg, Next: safeNext(r.URL.Query().Get("next"))})
}

func (w *web) login(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		http.Error(rw, "bad form", http.StatusBadRequest)
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || c.Value == "" || !sameOrigin(r) || r.PostFormValue("csrf") != c.Value {
		w.renderLogin(rw, r, http.StatusForbidden, "The sign-in form expired; try again.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
	defer cancel()
	addr := clientAddr(r)
	if w.refuseLocked(rw, addr) {
		w.renderLogin(rw, r, http.StatusTooManyRequests, "Too many failed sign-ins from your address; try again in a minute.")
		return
	}
	a, ok := w.s.d.Config.Current().Authenticate(r.PostFormValue("token"))
	if !ok {
		_ = w.s.refuse(ctx, broker.Errorf(401, events.CodeUnauthenticated, "console sign-in with an unknown approver token"),
			events.Rejection{Actor: events.Actor{Kind: events.ActorApprover, ID: events.UnknownAgent}})
		w.authFailed(ctx, addr)
		w.renderLogin(rw, r, http.StatusUnauthorized, "That token is not recognised.")
		return
	}
	w.auth.succeed(addr)
	sess := w.newSession(a, r.PostFormValue("token"))
	setCookie(rw, loginCookie, "", "/console/login", -1)
	setCookie(rw, sessionCookie, sess.id, "/", int(sessionTTL/time.Second))
	w.s.log.Info().Str("approver", a.Name).Msg("console sign-in")
	http.Redirect(rw, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (w *web) logout(rw http.ResponseWriter, r *http.Request, sess *session, _ *config.Approver) {
	w.dropSession(sess.id)
	setCookie(rw, sessionCookie, "", "/", -1)
	http.Redirect(rw, r, "/console/login", http.StatusSeeOther)
}

// data loads everything the console shows for approver a.
func (w *web) data(ctx context.Context, sess *session, a *config.Approver) (pageData, error) {
	d := pageData{Approver: a, Admin: isAdmin(a), CSRF: sess.csrf, Now: w.s.now().UTC(),
		Delivered: w.s.counters.Delivered.Load(), Failed: w.s.counters.Failed.Load(), Dropped: w.s.counters.Dropped.Load()}
	var err error
	if d.Pending, err = w.s.pendingViews(ctx, a); err != nil {
		return d, err
	}
	if d.Grants, err = w.s.activeGrants(ctx); err != nil {
		return d, err
	}
	if d.Revocations, err = w.s.recentRevocations(ctx); err != nil {
		return d, err
	}
	if d.Suspensions, err = w.s.suspensions(ctx); err != nil {
		return d, err
	}
	return d, nil
}

func (w *web) show(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver, tmpl string, adjust func(*pageData)) {
	ctx, done, ok := w.s.enterHTTP(r.Context())
	if !ok {
		http.Error(rw, "the approval service is not running", http.StatusServiceUnavailable)
		return
	}
	defer done()
	d, err := w.data(ctx, sess, a)
	if err != nil {
		w.s.log.Error().Err(err).Msg("console data")
		http.Error(rw, "could not read the current state; retry", http.StatusServiceUnavailable)
		return
	}
	if adjust != nil {
		adjust(&d)
	}
	w.render(rw, http.StatusOK, tmpl, d)
}

func (w *web) page(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	w.show(rw, r, sess, a, "page.html", func(d *pageData) { d.Flash = w.takeFlash(sess) })
}

// live renders the live part of the page alone; the script swaps it in
// when the server says something changed.
func (w *web) live(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	only := r.URL.Query().Get("only")
	w.show(rw, r, sess, a, "live", func(d *pageData) {
		if only != "" {
			d.Pending = slices.DeleteFunc(d.Pending, func(p PendingView) bool { return p.RequestID != only })
		}
	})
}

// requestPage shows one request: where a notification's approve and deny
// links lead.
func (w *web) requestPage(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
	id := r.PathValue("id")
	w.show(rw, r, sess, a, "page.html", func(d *pageData) {
		d.Flash = w.takeFlash(sess)
		d.Only = id
		if act := r.URL.Query().Get("action"); act == "approve" || act == "deny" {
			d.Action = act
		}
		d.Pending = slices.DeleteFunc(d.Pending, func(p PendingView) bool { return p.RequestID != id })
		if len(d.Pending) == 0 && d.Flash == "" {
			d.Flash = "Request " + id + " is not waiting for approval any more: it was decided or timed out."
		}
	})
}

// flashOf turns an action's outcome into the flash message shown after
// the redirect.
func flashOf(res broker.ActionResult, err error) string {
	if err != nil {
		var ae *broker.APIError
		if errors.As(err, &ae) {
			return "Refused: " + ae.Message
		}
		return "Failed: internal error; retry"
	}
	msg := res.Outcome
	if res.GrantID != "" {
		msg += " " + res.GrantID
	} else if res.RequestID != "" {
		msg += " " + res.RequestID
	} else if res.Agent != "" {
		msg += " " + res.Agent
	}
	if res.Message != "" {
		msg += ": " + res.Message
	}
	return msg
}

func (w *web) formAnswer(outcome string) sessionHandler {
	return func(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver) {
		ctx, done, ok := w.s.enterHTTP(r.Context())
		if !ok {
			http.Error(rw, "the approval service is not running", http.StatusServiceUnavailable)
			return
		}
		defer done()
		in := broker.ApproveInput{RequestID: r.PathValue("id"), Comment: r.PostFormValue("comment")}
		var err error
		var res broker.ActionResult
		if outcome == events.OutcomeApproved {
			in.Permissions = r.PostForm["perm"]
			if r.PostFormValue("narrow") == "1" && len(in.Permissions) == 0 {
				w.setFlash(sess, "Refused: select at least one permission to approve, or deny the request.")
				http.Redirect(rw, r, "/console/", http.StatusSeeOther)
				return
			}
			if d := strings.TrimSpace(r.PostFormValue("duration")); d != r.PostFormValue("requested") {
				in.Duration = d
			}
		}
		res, err = w.s.answer(ctx, a, in, outcome)
		if err != nil {
			var ae *broker.APIError
			if !errors.As(err, &ae) {
				w.s.log.Error().Err(err).Msg("console answer")
			}
		}
		w.setFlash(sess, flashOf(res, err))
		http.Redirect(rw, r, "/console/", http.StatusSeeOther)
	}
}

func (w *web) formRevoke(rw http.ResponseWriter, r *http.Request, sess *session, _ *config.Approver) {
	ctx, done, ok := w.s.enterHTTP(r.Context())
	if !ok {
		http.Error(rw, "the approval service is not running", http.StatusServiceUnavailable)
		return
	}
	defer done()
	res, err := w.s.revokeGrant(ctx, sess.token, r.PathValue("id"), r.PostFormValue("comment"))
	w.setFlash(sess, flashOf(res, err))
	http.Redirect(rw, r, "/console/", http.StatusSeeOther)
}

func (w *web) formReinstate(rw http.ResponseWriter, r *http.Request, sess *session, _ *config.Approver) {
	ctx, done, ok := w.s.enterHTTP(r.Context())
	if !ok {
		http.Error(rw, "the approval service is not running", http.StatusServiceUnavailable)
		return
	}
	defer done()
	res, err := w.s.reinstateAgent(ctx, sess.token, r.PathValue("agent"), r.PostFormValue("comment"))
	w.setFlash(sess, flashOf(res, err))
	http.Redirect(rw, r, "/console/", http.StatusSeeOther)
}

// events streams server-sent events: "changed" whenever a pending request,
// grant, lease or suspension changes, so the page fetches its live part
// again. Comments keep idle connections open.
func (w *web) events(rw http.ResponseWriter, r *http.Request, _ *session, _ *config.Approver) {
	fl, ok := rw.(http.Flusher)
	if !ok {
		http.Error(rw, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch, unsubscribe, ok := w.hub.subscribe()
	if !ok {
		http.Error(rw, "the approval service is stopping", http.StatusServiceUnavailable)
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
