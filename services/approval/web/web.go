// Package web is the approval service's approver console (server-rendered
// pages under /console/) and its HTTP JSON API (/api/v1/, api/openapi.yaml).
// It changes for other reasons than granting and deciding (pages, sessions,
// forms, live updates), so it lives apart from the service
// (services/approval), which it asks for everything that decides through
// the small Approvals interface. What it only shows (grants, revocations,
// suspensions, the history of decisions, failing revocations) it reads
// from the broker itself.
package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
	"github.com/agentjit/jit/services/approval/notify"
	"github.com/rs/zerolog"
)

//go:embed templates/*.html static/*
var webFS embed.FS

// Console sessions and cookies.
const (
	sessionCookie = "jit_session"
	loginCookie   = "jit_login"
	sessionTTL    = 8 * time.Hour
	maxSessions   = 10000
	maxFormBody   = 16 << 10
)

// contentSecurityPolicy allows only the console's own static script and
// style: no inline script, no framing, forms post only to the console.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// session is one signed-in approver. It lives only in the server's memory,
// under a random id that is the cookie's whole content. The approver's
// token is kept here (never in the cookie) to call the revoker's
// token-authenticated endpoints on the approver's behalf.
type session struct {
	id        string
	approver  string
	token     string
	tokenHash string
	csrf      string
	expires   time.Time
	flash     *flash
	draft     *draft // what the approver had typed, for the next page
}

// flash is the message the next page shows once: an action's outcome.
type flash struct {
	Kind string // flashSuccess, flashInfo or flashError
	Text string
}

// Kinds of flash messages, styled apart.
const (
	flashSuccess = "success"
	flashInfo    = "info"
	flashError   = "error"
)

// draft is what an approver had typed into a request's forms, kept across
// a sign-in or a refused form post so that the page shows it again.
type draft struct {
	RequestID string
	Action    string // approve or deny: the form it was typed into
	Comment   string
	Perms     []string // ticked permissions; nil: as rendered (all)
	Duration  string
}

// Approvals is what the console and the HTTP API ask of the approval
// service (*approval.Service): its gate for calls, its approver check and
// refusal record, the pending requests and their answers, and the
// gateway's forwarding of revocations and reinstatements to the revoker.
// Everything else they show they read from the broker themselves.
type Approvals interface {
	// Enter admits one call: ok is false before the service starts and
	// once it stops; done ends the call.
	Enter(parent context.Context) (ctx context.Context, done func(), ok bool)
	Authenticate(ctx context.Context, p service.Presented, about events.Rejection) (*config.Approver, error)
	Refuse(ctx context.Context, ae *broker.APIError, r events.Rejection) error
	Pending(ctx context.Context, a *config.Approver) ([]approval.PendingView, error)
	Answer(ctx context.Context, a *config.Approver, in broker.ApproveInput, outcome string) (approval.Answered, error)
	Gone(ctx context.Context, requestID string) *broker.APIError
	Revoke(ctx context.Context, a *config.Approver, grantID, comment string) (broker.ActionResult, error)
	Reinstate(ctx context.Context, a *config.Approver, agent, comment string) (broker.ActionResult, error)
	Counters() *notify.Counters
}

// Console is the approver console and the HTTP JSON API of one approval
// service. Build it with New, serve Handler, end it with Close.
type Console struct {
	core Approvals
	d    service.Deps
	now  func() time.Time
	// sessionNow is the sessions' clock (WithSessionClock).
	sessionNow func() time.Time
	log        zerolog.Logger
	tmpl       *template.Template

	// ctx bounds the console's own reading (history, bucket watches,
	// revokers' reports) until Close.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*session

	hub     *hub
	hist    *history
	failing *failing
}

// Option configures a Console.
type Option func(*Console)

// WithSessionClock gives the console's sessions their own clock, so that a
// test can make them expire without moving the service's time.
func WithSessionClock(now func() time.Time) Option { return func(w *Console) { w.sessionNow = now } }

// New returns the console of core, reading the broker through d (the
// approval service's own dependencies: its connection, buckets and
// configuration). It reads nothing until its first use.
func New(core Approvals, d service.Deps, opts ...Option) *Console {
	w := &Console{core: core, d: d, now: d.Clock(), log: d.Log.With().Str("component", "console").Logger(),
		sessions: map[string]*session{}}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	for _, o := range opts {
		o(w)
	}
	if w.sessionNow == nil {
		w.sessionNow = w.now
	}
	funcs := template.FuncMap{
		"join":     strings.Join,
		"orList":   approval.OrList,
		"dict":     dict,
		"howText":  howText,
		"howClass": func(how string) string { return strings.ReplaceAll(how, " ", "-") },
		"byText":   byText,
		"roles":    approval.RolesList,
		"rfc3339": func(t time.Time) string {
			return t.UTC().Format(time.RFC3339)
		},
		"clock": func(t time.Time) string { return t.UTC().Format("15:04:05 UTC") },
		// when is a time of today as a clock, another day with its date.
		"when": func(t time.Time) string {
			t, now := t.UTC(), w.now().UTC()
			if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
				return t.Format("15:04:05 UTC")
			}
			return t.Format("2 Jan 15:04 UTC")
		},
		"dur": duration,
		"ticked": func(d *draft, id, perm string) bool {
			return d == nil || d.RequestID != id || d.Perms == nil || slices.Contains(d.Perms, perm)
		},
		"draftFor": func(d *draft, id, action string) *draft {
			if d == nil || d.RequestID != id || d.Action != action {
				return nil
			}
			return d
		},
		"approveLabel": approveLabel,
	}
	w.tmpl = template.Must(template.New("").Funcs(funcs).ParseFS(webFS, "templates/*.html"))
	w.hub = newHub(w)
	w.hist = newHistory(w)
	w.hist.notify = w.hub.signal
	w.failing = newFailing(w)
	return w
}

// Handler returns the approver console (under /console/) and the HTTP JSON
// API (under /api/v1/), plus GET /metrics. Mount it at "/" of a server
// whose WriteTimeout is 0 (the console's live updates are a long-lived
// response), and register CloseStreams to run on its shutdown.
func (w *Console) Handler() http.Handler { return w.routes() }

// CloseStreams ends the console's live-update streams, so an http.Server
// that serves Handler can shut down without waiting for them.
func (w *Console) CloseStreams() { w.hub.close() }

// Close ends the live-update streams and the console's reading of the
// broker, and waits for it. The server that serves Handler is shut down
// first, and the approval service stopped after.
func (w *Console) Close() {
	w.hub.close()
	w.cancel()
	w.hist.wait()
	w.failing.wait()
}

func (w *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "static")
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	mux.HandleFunc("GET /console/static/{file}", func(rw http.ResponseWriter, r *http.Request) {
		if _, err := fs.Stat(static, r.PathValue("file")); err != nil {
			w.notFound(rw, r)
			return
		}
		files.ServeHTTP(rw, r)
	})
	mux.HandleFunc("GET /{$}", func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, "/console/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /console/login", w.loginPage)
	mux.HandleFunc("POST /console/login", w.login)
	mux.HandleFunc("POST /console/logout", w.withSession(true, w.logout))
	mux.HandleFunc("GET /console/{$}", w.withSession(false, w.page))
	mux.HandleFunc("GET /console/live", w.withSession(false, w.live))
	mux.HandleFunc("GET /console/events", w.withSession(false, w.events))
	mux.HandleFunc("GET /console/requests/{id}", w.withSession(false, w.requestPage))
	mux.HandleFunc("POST /console/requests/{id}/approve", w.withSession(true, w.formAnswer(events.OutcomeApproved)))
	mux.HandleFunc("POST /console/requests/{id}/deny", w.withSession(true, w.formAnswer(events.OutcomeDenied)))
	mux.HandleFunc("POST /console/grants/{id}/revoke", w.withSession(true, w.formRevoke))
	mux.HandleFunc("POST /console/agents/{agent}/reinstate", w.withSession(true, w.formReinstate))
	mux.HandleFunc("GET /console/requests/{id}/{action}", w.withSession(false, w.actionLink))
	mux.HandleFunc("/console/", w.notFound)

	mux.HandleFunc("GET /api/v1/pending", w.withToken(w.apiPending))
	mux.HandleFunc("GET /api/v1/grants", w.withToken(w.apiGrants))
	mux.HandleFunc("GET /api/v1/revocations", w.withToken(w.apiRevocations))
	mux.HandleFunc("GET /api/v1/suspensions", w.withToken(w.apiSuspensions))
	mux.HandleFunc("POST /api/v1/requests/{id}/approve", w.withToken(w.apiAnswer(events.OutcomeApproved)))
	mux.HandleFunc("POST /api/v1/requests/{id}/deny", w.withToken(w.apiAnswer(events.OutcomeDenied)))
	mux.HandleFunc("POST /api/v1/grants/{id}/revoke", w.withToken(w.apiRevoke))
	mux.HandleFunc("POST /api/v1/agents/{agent}/reinstate", w.withToken(w.apiReinstate))
	mux.HandleFunc("GET /metrics", w.metrics)
	return securityHeaders(mux)
}

// securityHeaders sets the headers every answer carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer browsers send
		// "Origin: null" on form posts, which sameOrigin must refuse.
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/console/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(rw, r)
	})
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func setCookie(rw http.ResponseWriter, name, value, path string, maxAge int) {
	http.SetCookie(rw, &http.Cookie{
		Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
}

// newSession signs approver in and returns the session.
func (w *Console) newSession(a *config.Approver, token string) *session {
	sess := &session{id: randomToken(), approver: a.Name, token: token, tokenHash: a.TokenSHA256,
		csrf: randomToken(), expires: w.sessionNow().Add(sessionTTL)}
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.sessionNow()
	for id, old := range w.sessions {
		if !now.Before(old.expires) {
			delete(w.sessions, id)
		}
	}
	if len(w.sessions) >= maxSessions {
		for id := range w.sessions { // drop an arbitrary session rather than grow without bound
			delete(w.sessions, id)
			break
		}
	}
	w.sessions[sess.id] = sess
	return sess
}

// sessionOf returns the request's live session and its approver. A session
// ends when it expires, or when its approver's entry in the configuration
// is gone or its token changed.
func (w *Console) sessionOf(r *http.Request) (*session, *config.Approver) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	w.mu.Lock()
	sess := w.sessions[c.Value]
	if sess != nil && !w.sessionNow().Before(sess.expires) {
		delete(w.sessions, c.Value)
		sess = nil
	}
	w.mu.Unlock()
	if sess == nil {
		return nil, nil
	}
	a, ok := w.d.Config.Current().Approver(sess.approver)
	if !ok || subtle.ConstantTimeCompare([]byte(a.TokenSHA256), []byte(sess.tokenHash)) != 1 {
		w.dropSession(sess.id)
		return nil, nil
	}
	return sess, a
}

func (w *Console) dropSession(id string) {
	w.mu.Lock()
	delete(w.sessions, id)
	w.mu.Unlock()
}

func (w *Console) setFlash(sess *session, f flash) {
	w.mu.Lock()
	sess.flash = &f
	w.mu.Unlock()
}

func (w *Console) takeFlash(sess *session) *flash {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := sess.flash
	sess.flash = nil
	return f
}

func (w *Console) setDraft(sess *session, d *draft) {
	w.mu.Lock()
	sess.draft = d
	w.mu.Unlock()
}

// takeDraft returns and forgets the session's draft for request id.
func (w *Console) takeDraft(sess *session, id string) *draft {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := sess.draft
	if d == nil || d.RequestID != id {
		return nil
	}
	sess.draft = nil
	return d
}

type sessionHandler func(rw http.ResponseWriter, r *http.Request, sess *session, a *config.Approver)

// withSession requires a signed-in approver; for state-changing requests
// (post) also a same-origin request carrying the session's CSRF token.
//
// Without a live session (signed out, expired, or the service restarted) a
// page is redirected to sign-in and back; a form post gets the sign-in page
// carrying what was typed (a draft), which the request's page shows again
// after sign-in; the console's script gets 401 with where to sign in.
// Refusals are pages in the console's style, or JSON for the script.
func (w *Console) withSession(post bool, h sessionHandler) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		sess, a := w.sessionOf(r)
		if sess == nil {
			w.signInFirst(rw, r, post)
			return
		}
		if post {
			r.Body = http.MaxBytesReader(rw, r.Body, maxFormBody)
			if !sameOrigin(r) {
				w.refuseHTTP(rw, r, http.StatusForbidden, events.CodeForbidden, "cross-origin request refused", about(r, service.ApproverActor(a)))
				return
			}
			if err := r.ParseForm(); err != nil {
				w.errorPage(rw, r, http.StatusBadRequest, events.CodeMalformed, "The form could not be read", "The form sent was not valid or too large.")
				return
			}
			got := r.PostFormValue("csrf")
			if got == "" {
				got = r.Header.Get("X-CSRF-Token")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				if d := draftOf(r); d != nil {
					w.setDraft(sess, d) // shown again on the page the error links to
				}
				w.refuseHTTP(rw, r, http.StatusForbidden, events.CodeForbidden,
					"this page was out of date (its security token is from an earlier session): reload the console and try again",
					about(r, service.ApproverActor(a)))
				return
			}
		}
		h(rw, r, sess, a)
	}
}

// signInFirst answers a request that needs a session and has none.
func (w *Console) signInFirst(rw http.ResponseWriter, r *http.Request, post bool) {
	next := nextFor(r)
	if !post {
		next = safeNext(r.URL.RequestURI())
	}
	login := "/console/login?next=" + url.QueryEscape(next)
	switch {
	case wantsJSON(r) || r.URL.Path == "/console/events":
		writeJSON(rw, http.StatusUnauthorized, map[string]any{"status": http.StatusUnauthorized, "code": events.CodeUnauthenticated,
			"message": "Your session has ended (signed out, expired, or the service restarted): sign in again.", "login": login})
	case post:
		var d *draft
		if sameOrigin(r) { // another site must not fill in the approver's forms
			r.Body = http.MaxBytesReader(rw, r.Body, maxFormBody)
			if r.ParseForm() == nil {
				d = draftOf(r)
			}
		}
		w.renderLogin(rw, r, http.StatusUnauthorized, next, d,
			"Your session has ended, so nothing was done. Sign in again to continue: what you typed is kept.")
	case r.URL.Path == "/console/live":
		w.errorPage(rw, r, http.StatusUnauthorized, events.CodeUnauthenticated, "Sign in again", "Your session has ended.")
	default:
		http.Redirect(rw, r, login, http.StatusSeeOther)
	}
}

// nextFor is where to return after signing in again from a form post: the
// request's own page for an answer to a request, else the console.
func nextFor(r *http.Request) string {
	if strings.HasPrefix(r.Pattern, "POST /console/requests/{id}/") {
		if id := r.PathValue("id"); events.ValidID(id) {
			return "/console/requests/" + id
		}
	}
	return "/console/"
}

// draftOf reads what an answer form carried, to show it again; nil for
// other forms.
func draftOf(r *http.Request) *draft {
	if !strings.HasPrefix(r.Pattern, "POST /console/requests/{id}/") {
		return nil
	}
	id := r.PathValue("id")
	if !events.ValidID(id) || r.PostForm == nil {
		return nil
	}
	d := &draft{RequestID: id, Action: path.Base(r.URL.Path), Comment: truncate(r.PostFormValue("comment"), approval.MaxCommentLength),
		Duration: truncate(strings.TrimSpace(r.PostFormValue("duration")), 32)}
	if d.Action == "approve" && r.PostFormValue("narrow") == "1" {
		d.Perms = append([]string{}, r.PostForm["perm"]...)
	}
	return d
}

// wantsJSON says whether the caller is the console's script, which asks
// for JSON answers.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

// sameOrigin refuses a request whose Origin (or, lacking it, Referer) names
// another host. Browsers send Origin on every POST.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" || o == "null" {
		return o == ""
	}
	rest, ok := strings.CutPrefix(o, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(o, "https://")
	}
	if !ok {
		return false
	}
	host, _, _ := strings.Cut(rest, "/")
	return strings.EqualFold(host, r.Host)
}

// refuseHTTP answers a refusal of a console request, as a page or JSON for
// the script, and records it as jit.rejected.
func (w *Console) refuseHTTP(rw http.ResponseWriter, r *http.Request, status int, code, msg string, rej events.Rejection) {
	_ = w.core.Refuse(r.Context(), broker.Errorf(status, code, "%s", msg), rej)
	w.errorPage(rw, r, status, code, "Refused", capitalize(msg)+".")
}

// errorPage answers an error of a console request: a page in the console's
// style, or, for the console's script, JSON ({"status","code","message"}).
func (w *Console) errorPage(rw http.ResponseWriter, r *http.Request, status int, code, title, msg string) {
	if wantsJSON(r) {
		writeJSON(rw, status, map[string]any{"status": status, "code": code, "message": msg})
		return
	}
	back := "/console/"
	if strings.HasPrefix(r.URL.Path, "/console/requests/") {
		back = nextFor(r)
	}
	w.render(rw, status, "error.html", errorData{Status: status, Code: code, Title: title, Message: msg, Back: back})
}

// errorData is what error.html shows.
type errorData struct {
	Status  int
	Code    string
	Title   string
	Message string
	Back    string
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
