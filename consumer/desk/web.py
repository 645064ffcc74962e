"""The desk's page and JSON API, a Flask app served by the service's one HTTP server.

Sign-in: a reviewer's token, either once on the sign-in form (then a signed session cookie) or on
every request as ``Authorization: Bearer TOKEN``. Writes made with the session cookie carry a
CSRF token (a form field, or the ``X-CSRF-Token`` header for the API); bearer requests carry no
cookie, so they need none. Templates escape everything they show (Jinja2's autoescape), and the
Content-Security-Policy allows only the desk's own script and stylesheet. Images (a sample's
``metadata.image_url``, a neighbour's thumbnail) may come from the desk, from ``data:`` URIs and from
http(s) addresses: ``img-src`` allows those and nothing runs from them; only raster ``data:`` images
and http(s) addresses are put in an ``<img>`` at all (:func:`schemas.displayable_image`), and the
``no-referrer`` policy keeps the desk's address from the image's host.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from flask import Flask, abort, flash, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from consumer.desk.desk import Refused, ReviewDesk
from consumer.desk.explain import band_in_words, in_words, score_in_words, suspect_in_words
from consumer.tailing import Unavailable
from consumer.desk.queue import Filters, band_of
from schemas import displayable_image
from schemas.review import THUMBNAIL_CHARS
from consumer.desk.reviewers import Reviewers

HOTKEYS = "1234567890"
"""Keys that relabel to the first ten other labels, in the style of Label Studio's choice hotkeys."""
OUTCOMES = ("confirmed", "false_alarm", "skip")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _local(target: str) -> bool:
    r"""Whether a sign-in's ``next`` stays on this site: not ``//host``, nor a slash and a backslash,
    which browsers follow off it.

    >>> [_local(t) for t in ("/?dataset=pets", "//evil.example", "/\\evil.example", "https://evil.example")]
    [True, False, False, False]
    """
    return target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target


def create_app(desk: ReviewDesk, reviewers: Reviewers, *, secret_key: bytes) -> Flask:
    """The desk as a WSGI app."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secret_key, SESSION_COOKIE_NAME="labelwatch_desk", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", MAX_CONTENT_LENGTH=64 * 1024)

    def signed_in() -> tuple[str | None, str | None]:
        """(reviewer, how): ``bearer``, ``session``, or (None, None)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return reviewers.identify(token.strip()), "bearer"
        reviewer = session.get("reviewer")
        if reviewer in reviewers.ids:
            return reviewer, "session"
        return None, None

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    def csrf_ok(given: str | None) -> bool:
        expected = session.get("csrf")
        return bool(expected and given and hmac.compare_digest(given.encode(), expected.encode()))

    def filters() -> Filters:
        return Filters(**{name: request.args.get(name) or None for name in ("dataset", "detector", "label")})

    def api_error(status: int, message: str):
        response = jsonify(error=message)
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="labelwatch review desk"'
        return response

    @app.after_request
    def _secure(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.errorhandler(Unavailable)
    def _unavailable(error):
        if request.path.startswith("/api/"):
            return api_error(503, str(error))
        return render_template("message.html", title="Kafka is not answering", message=str(error)), 503

    @app.get("/login")
    def login_form():
        return render_template("login.html", csrf=csrf_token(), next=request.args.get("next", "/"))

    @app.post("/login")
    def login():
        if not csrf_ok(request.form.get("csrf_token")):
            abort(403)
        reviewer = reviewers.identify(request.form.get("token", ""))
        if reviewer is None:
            return render_template("login.html", csrf=csrf_token(), next="/", failed=True), 401
        session.clear()
        session.update(reviewer=reviewer, csrf=secrets.token_urlsafe(32))
        target = request.form.get("next", "/")
        return redirect(target if _local(target) else "/", code=303)

    @app.post("/logout")
    def logout():
        if csrf_ok(request.form.get("csrf_token")):
            session.clear()
        return redirect(url_for("login_form"), code=303)

    @app.get("/")
    def queue_page():
        reviewer, how = signed_in()
        if reviewer is None:
            if how == "bearer":
                return api_error(401, "unknown bearer token")
            return redirect(url_for("login_form", next=request.full_path.rstrip("?")), code=303)
        chosen = filters()
        current = desk.take(reviewer, chosen)
        upcoming = [e for e in desk.open_items(reviewer, chosen) if current is None or e.event_id != current.event_id]
        relabels = []
        if current is not None:
            others = [label for label in desk.queue.labels(current.dataset) if label != current.label]
            if current.suggested_label in others:  # the suggestion first, on key 1
                others.remove(current.suggested_label)
                others.insert(0, current.suggested_label)
            relabels = list(zip(HOTKEYS, others))
        neighbors = []
        if current is not None and current.context:
            # (an event on the review topic may come from any producer: its thumbnails are checked again)
            neighbors = [(n.model_copy(update={"thumbnail": displayable_image(n.thumbnail, THUMBNAIL_CHARS)}),
                          n.snippet or desk.queue.text_of(current.dataset, n.sample_id))
                         for n in current.context.neighbors]
        return render_template(
            "queue.html", reviewer=reviewer, current=current, reasons=in_words(current) if current else [],
            suspicion=suspicion(current) if current else None, score_in_words=score_in_words,
            image=displayable_image(current.metadata.get("image_url")) if current else None,
            neighbors=neighbors, relabels=relabels, upcoming=upcoming[:20], n_open=len(upcoming) + bool(current),
            progress=desk.queue.progress(), filters=chosen, datasets=desk.queue.datasets(),
            back=urlencode({k: v for k, v in vars(chosen).items() if v}), csrf=csrf_token(),
            show_session=how == "session")

    def suspicion(event) -> dict:
        """How suspect ``event`` is, in words, and what reviewers confirmed in its score band."""
        if event.suspect_share is None:
            return {}
        band = band_of(event.suspect_share)
        confirmed, answered = desk.queue.band_precision(event.dataset, band)
        return {"rank": suspect_in_words(event.suspect_share), "band": band_in_words(band),
                "confirmed": confirmed, "answered": answered}

    @app.post("/answer")
    def answer_form():
        reviewer, how = signed_in()
        if reviewer is None or how != "session":
            abort(401)
        if not csrf_ok(request.form.get("csrf_token")):
            abort(403)
        outcome = request.form.get("outcome", "")
        if outcome not in OUTCOMES:
            abort(400)
        try:
            desk.answer(reviewer, request.form.get("event_id", ""), outcome,
                        request.form.get("corrected_label") or None)
        except Refused as refused:
            flash(str(refused))
        back = request.form.get("back", "")
        return redirect("/" + (f"?{back}" if back else ""), code=303)

    @app.get("/api/queue")
    def api_queue():
        reviewer, _ = signed_in()
        if reviewer is None:
            return api_error(401, "sign in: Authorization: Bearer <token>, or the desk's session")
        return jsonify([e.model_dump(mode="json") for e in desk.open_items(reviewer, filters())])

    @app.post("/api/answers")
    def api_answer():
        reviewer, how = signed_in()
        if reviewer is None:
            return api_error(401, "sign in: Authorization: Bearer <token>, or the desk's session")
        if how == "session" and not csrf_ok(request.headers.get("X-CSRF-Token")):
            return api_error(403, "a write with the session cookie needs the X-CSRF-Token header")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("event_id"), str):
            return api_error(400, 'expected a JSON object {"event_id", "outcome", "corrected_label"}')
        if body.get("outcome") not in OUTCOMES:
            return api_error(422, f"outcome must be one of {', '.join(OUTCOMES)}")
        label = body.get("corrected_label")
        if label is not None and not isinstance(label, str):
            return api_error(422, "corrected_label must be a string or null")
        try:
            correction = desk.answer(reviewer, body["event_id"], body["outcome"], label)
        except Refused as refused:
            return api_error(refused.status, str(refused))
        return jsonify(correction.model_dump(mode="json")), 201

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        if request.path.startswith("/api/"):
            return api_error(error.code or 500, error.description or error.name)
        return render_template("message.html", title=f"{error.code} {error.name}",
                               message=error.description), error.code

    return app
