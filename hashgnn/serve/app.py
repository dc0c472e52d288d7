"""The HTTP service: a FastAPI app over a :class:`~hashgnn.serve.service.ServedRun`.

``create_app(run, settings)`` builds the app; ``hashgnn serve`` runs it on uvicorn (``app_from_env`` is
the factory its worker processes import). Endpoints (docs/SERVING.md has an example of each; the
OpenAPI page is ``/docs``):

- ``GET  /v1/info``                               what is served (run id, counts, example ids)
- ``GET  /v1/users/{user}``                       a user's training items
- ``GET  /v1/users/{user}/recommendations``       top-k of a trained user (k, mode, exclude_seen, allow, deny)
- ``POST /v1/recommendations/new-user``           top-k of a user folded in from the items in the body
- ``GET  /v1/items/{item}/similar``               items nearest to an item's code
- ``GET  /healthz``, ``GET /readyz``, ``GET /metrics``
- ``POST /admin/swap``                            load another run beside the served one, then switch
- ``GET  /``                                      the web page

Status codes: 404 unknown user / item (named), 422 a bad field (named), 413 a list or body too
large, 501 fold-in not possible for the run's method, 503 no run loaded yet. A request keeps the run
it started on until it finishes, so a swap never fails a request in flight.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from hashgnn.arrays import unique_ints
from hashgnn.errors import HashgnnError
from hashgnn.methods import ALL_MODES
from hashgnn.serve.batching import MicroBatcher
from hashgnn.serve.metrics import Metrics
from hashgnn.serve.service import BadField, NotFound, ServedRun, ServeSettings, TooLarge

Mode = Literal["hamming", "hierarchical", "continuous", "weighted"]
API = "/v1"
ENV_RUN, ENV_SETTINGS = "HASHGNN_SERVE_RUN", "HASHGNN_SERVE_SETTINGS"


# ------------------------------------------------------------------------------- schemas
class Recommended(BaseModel):
    item: int | str = Field(description="the data set's item id")
    score: float = Field(description="hamming: K - 2 * Hamming distance; hierarchical, continuous: <z_u, z_i>")
    rank: int


class Recommendations(BaseModel):
    run_id: str
    mode: Mode
    k: int
    user: int | str | None = Field(None, description="the data set's user id (null for a new user)")
    items: list[Recommended]
    excluded: int = Field(description="items excluded from the ranking (seen items and the deny list)")
    took_ms: float = Field(description="time in the service, from request to response")


class History(BaseModel):
    run_id: str
    user: int | str
    items: list[int | str]


class NewUser(BaseModel):
    """A user the run has not trained on, given by the items they interacted with."""

    items: list[int | str] = Field(description="the data set's ids of the user's items (at least one)")
    k: int = Field(20, description="results to return")
    mode: Mode = "hamming"
    exclude_seen: bool = Field(True, description="leave the given items out of the results")
    allow: list[int | str] | None = Field(None, description="rank only these items")
    deny: list[int | str] | None = Field(None, description="never return these items")


class Swap(BaseModel):
    run: str | None = Field(None, description="run folder to serve (default: the folder served now, reloaded)")


# ------------------------------------------------------------------------------- serving state
class _Serving:
    """A served run with its micro-batchers (one per mode)."""

    def __init__(self, served: ServedRun, metrics: Metrics) -> None:
        self.served = served
        s = served.settings
        self.batchers = {
            m: MicroBatcher(
                functools.partial(served.search, m),
                s.max_batch,
                s.batch_wait_ms,
                metrics.batch.labels(m).observe,
            )
            for m in served.modes
        }

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.close()


class _State:
    def __init__(self, path: Path | None, settings: ServeSettings) -> None:
        self.path, self.settings = path, settings
        self.current: _Serving | None = None
        self.load_error: str | None = None
        self.swap_lock = asyncio.Lock()
        self.metrics = Metrics()


class _Unavailable(Exception):
    pass


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _field_error(where: str, field: str, msg: str) -> JSONResponse:
    # the shape FastAPI gives its own validation errors, so clients read one format
    return _error(422, [{"loc": [where, field], "msg": msg, "type": "value_error"}])


class _Observe:
    """Pure ASGI middleware (cheaper per request than Starlette's BaseHTTPMiddleware): refuses bodies
    over the limit with 413 and records every answer's endpoint, mode, status and latency."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            status = 413
            await _error(413, f"request body over {self.max_body} bytes")(scope, receive, send)
        else:

            async def send_status(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            await self.app(scope, receive, send_status)
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        if endpoint != "/metrics":
            mode = (scope.get("state") or {}).get("mode", "")
            self.metrics.observe(endpoint, mode, status, time.perf_counter() - t0)


_MODES_B = {m.encode(): m for m in ALL_MODES}
_USERS, _RECS = f"{API}/users/", "/recommendations"


def _plain_query(qs: bytes) -> tuple[int, str, bool] | None:
    """``(k, mode, exclude_seen)`` of a query string made only of those three in their plain forms
    (``k`` digits, a mode's name, ``true`` / ``false``; the last of a repeated key wins, as in
    FastAPI); None for anything else, which FastAPI then parses and, where wrong, rejects."""
    k, mode, seen = 20, "hamming", True
    if qs:
        for part in qs.split(b"&"):
            key, _, val = part.partition(b"=")
            if key == b"k" and val.isdigit() and len(val) < 10:
                k = int(val)
            elif key == b"mode" and val in _MODES_B:
                mode = _MODES_B[val]
            elif key == b"exclude_seen" and val in (b"true", b"false"):
                seen = val == b"true"
            else:
                return None
    return k, mode, seen


class _HotPath:
    """The service's hot request, ``GET /v1/users/{user}/recommendations`` with at most ``k``, ``mode``
    and ``exclude_seen``, answered in front of FastAPI's routing, dependency solving and middleware
    stack: the same function as the route's (``answer``), so the same body, and the same metrics.
    Anything else (other parameters or spellings, a request body, any error such as an unknown user
    or a bad ``k``, no run loaded yet) goes on to FastAPI, which answers it, errors included, as
    before. It more than doubles the requests/s at 64 clients (docs/SERVING.md)."""

    _REFUSE = (b"content-length", b"transfer-encoding")  # a GET with a body: _Observe's rules apply

    def __init__(self, answer: Any, endpoint: str, metrics: Metrics) -> None:
        self.answer, self.endpoint, self.metrics = answer, endpoint, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> bool:
        """Answer the request and return True, or return False having sent nothing."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        t0 = time.perf_counter()
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not (path.startswith(_USERS) and path.endswith(_RECS)):
            return False
        user = path[len(_USERS) : -len(_RECS)]
        query = _plain_query(scope["query_string"]) if user and "/" not in user else None
        if query is None or any(h[0] in self._REFUSE for h in scope["headers"]):
            return False
        state: dict[str, Any] = {}
        try:
            body = await self.answer(state, user, *query, None, None)
        except (HashgnnError, _Unavailable):
            return False  # FastAPI answers it with its status and message
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(self.endpoint, state["mode"], 200, time.perf_counter() - t0)
        return True


class _ServiceApp(FastAPI):
    """FastAPI with :class:`_HotPath` in front of its middleware stack."""

    hot: _HotPath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.hot is None or not await self.hot(scope, receive, send):
            await super().__call__(scope, receive, send)


# ------------------------------------------------------------------------------- the app
def _settle_heap() -> None:
    """Collect once, then move every live object out of the garbage collector's reach (``gc.freeze``).

    The service holds a few hundred thousand long-lived objects (torch, FastAPI, pydantic, the run);
    without this, each full collection walks them all while requests wait: at 64 clients the p99
    latency on gowalla was 196 ms against a p95 of 23 ms, and 21.5 ms with it (idle 2-core machine,
    docs/SERVING.md). Objects still die by reference counting; only cycles among frozen
    objects wait for the next load, whose ``gc.unfreeze()`` hands them back to the collector.
    """
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(run: str | Path | None, settings: ServeSettings | None = None, *, load: bool = True) -> FastAPI:
    """The service over run folder ``run``, loaded in the background at start-up (``/readyz`` says when).

    ``load=False`` starts with no run (``/readyz`` 503) until ``POST /admin/swap`` names one.
    """
    from contextlib import asynccontextmanager

    settings = settings or ServeSettings()
    state = _State(Path(run) if run is not None else None, settings)

    async def _load(path: Path) -> _Serving:
        served = await asyncio.to_thread(ServedRun, path, settings)
        await asyncio.to_thread(_settle_heap)
        return _Serving(served, state.metrics)

    async def _initial() -> None:
        assert state.path is not None
        try:
            state.current = await _load(state.path)
            state.metrics.served(state.current.served)
        except Exception as e:  # any failure to load is reported by /readyz, never a silent hang
            state.load_error = str(e) if isinstance(e, HashgnnError) else f"{type(e).__name__}: {e}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        task = asyncio.create_task(_initial()) if (load and state.path is not None) else None
        yield
        if task is not None and not task.done():
            task.cancel()
        if state.current is not None:
            await state.current.close()

    app = _ServiceApp(
        title="hashgnn serve",
        summary="Recommendations from a trained HashGNN run: binary codes, Hamming / hierarchical / continuous retrieval.",
        version="1",
        lifespan=lifespan,
    )
    app.state.hashgnn = state

    def serving() -> _Serving:
        if state.current is None:
            raise _Unavailable(state.load_error or "the run is still loading")
        return state.current

    # ---- errors: every user error gets its status, never a 500
    @app.exception_handler(NotFound)
    async def _not_found(request: Request, e: NotFound) -> JSONResponse:
        return _error(404, str(e))

    @app.exception_handler(BadField)
    async def _bad_field(request: Request, e: BadField) -> JSONResponse:
        return _field_error("query" if request.method == "GET" else "body", e.field, str(e))

    @app.exception_handler(TooLarge)
    async def _too_large(request: Request, e: TooLarge) -> JSONResponse:
        return _error(413, str(e))

    @app.exception_handler(_Unavailable)
    async def _unavailable(request: Request, e: _Unavailable) -> JSONResponse:
        return _error(503, f"no run is being served: {e}")

    @app.exception_handler(HashgnnError)
    async def _hashgnn_error(request: Request, e: HashgnnError) -> JSONResponse:
        from hashgnn.serve.foldin import FoldInUnsupported

        return _error(501 if isinstance(e, FoldInUnsupported) else 422, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = [{k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in e.errors()]
        return _error(422, errs)

    # ---- probes
    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: a run is loaded and served", responses={503: {"description": "loading"}})
    async def readyz() -> JSONResponse:
        if state.current is None:
            return _error(503, state.load_error or "loading")
        return JSONResponse({"ready": True, "run_id": state.current.served.run_id})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("hashgnn.serve").joinpath("static/index.html").read_text())

    # ---- API
    @app.get(f"{API}/info", summary="What is served: run id, method, counts, example ids")
    async def info() -> dict[str, Any]:
        return serving().served.info()

    @app.get(f"{API}/users/{{user}}", summary="A trained user's training items", response_model=History)
    async def user_history(user: str) -> History:
        sv = serving().served
        u = sv.users.index_one(user)
        return History(
            run_id=sv.run_id, user=sv.users.original(np.array([u]))[0], items=sv.items.original(sv.history(u))
        )

    async def _answer(
        sv_: _Serving,
        t0: float,
        user: Any,
        code: np.ndarray,
        vector: np.ndarray,
        k: int,
        mode: str,
        exclude: np.ndarray,
        allow: np.ndarray | None,
    ) -> bytes:
        """The JSON body of a recommendation (the ``Recommendations`` schema)."""
        sv = sv_.served
        sv.check_mode(mode)
        if allow is not None:
            scores, items = await asyncio.to_thread(sv.search_allowed, mode, code, vector, k, allow, exclude)
            scores, items = scores[0], items[0]
        else:
            scores, items = await sv_.batchers[mode].submit(code, vector, k, exclude)
        valid = items >= 0
        ids = sv.items.original(items[valid])
        # encoded directly: the schema (Recommendations) documents it, and skipping pydantic's per-item
        # model building and validation halves the service's CPU time per request; orjson takes a
        # tenth of the time of json.dumps here
        return orjson.dumps(
            {
                "run_id": sv.run_id,
                "mode": mode,
                "k": k,
                "user": user,
                "items": [
                    {"item": i, "score": s, "rank": r + 1}
                    for r, (i, s) in enumerate(zip(ids, scores[valid].tolist(), strict=True))
                ],
                "excluded": len(exclude),
                "took_ms": round((time.perf_counter() - t0) * 1000, 3),
            }
        )

    async def trained_user(
        request_state: dict[str, Any],
        user: str,
        k: int,
        mode: str,
        exclude_seen: bool,
        allow: list[str] | None,
        deny: list[str] | None,
    ) -> bytes:
        """The body of ``GET /v1/users/{user}/recommendations``, for the route and for :class:`_HotPath`."""
        t0 = time.perf_counter()
        request_state["mode"] = mode
        sv_ = serving()
        sv = sv_.served
        k = sv.check_k(k)
        u = sv.users.index_one(user)
        allow_i = sv.item_list(allow, "allow")
        deny_i = sv.item_list(deny, "deny")
        if deny_i is None:  # the training items are sorted and unique already (ServedRun.history)
            exclude = sv.history(u) if exclude_seen else np.zeros(0, np.int64)
        else:
            exclude = unique_ints(np.concatenate([sv.history(u), deny_i] if exclude_seen else [deny_i]))
        code, vector = sv.user_query(u)
        return await _answer(sv_, t0, sv.users.original(np.array([u]))[0], code, vector, k, mode, exclude, allow_i)

    @app.get(
        f"{API}/users/{{user}}/recommendations",
        summary="Top-k items of a trained user",
        response_model=Recommendations,
        responses={404: {"description": "unknown user or item"}, 413: {"description": "list too long"}},
    )
    async def recommend_user(
        request: Request,
        user: str,
        k: Annotated[int, Query(ge=1, description="results to return (at most the run's items and max_k)")] = 20,
        mode: Annotated[
            Mode, Query(description="hamming | hierarchical | continuous | weighted (runs with query vectors)")
        ] = "hamming",
        exclude_seen: Annotated[bool, Query(description="leave out the user's training items")] = True,
        allow: Annotated[list[str] | None, Query(description="rank only these item ids (repeat the parameter)")] = None,
        deny: Annotated[
            list[str] | None, Query(description="never return these item ids (repeat the parameter)")
        ] = None,
    ) -> Response:
        return _json(
            await trained_user(request.scope.setdefault("state", {}), user, k, mode, exclude_seen, allow, deny)
        )

    @app.post(
        f"{API}/recommendations/new-user",
        summary="Top-k items of a user the model has never seen, folded in from their items",
        response_model=Recommendations,
        responses={
            404: {"description": "unknown item"},
            413: {"description": "list too long"},
            501: {"description": "the run's method cannot fold in new users"},
        },
    )
    async def recommend_new(request: Request, body: NewUser) -> Response:
        t0 = time.perf_counter()
        request.state.mode = body.mode
        sv_ = serving()
        sv = sv_.served
        k = sv.check_k(body.k)
        if not body.items:
            raise BadField("items", "give at least one item the new user interacted with")
        given = sv.item_list(body.items, "items")
        assert given is not None
        allow_i = sv.item_list(body.allow, "allow")
        deny_i = sv.item_list(body.deny, "deny")
        code, vector = await asyncio.to_thread(sv.fold_in, given)
        parts = [given] if body.exclude_seen else []
        if deny_i is not None:
            parts.append(deny_i)
        exclude = unique_ints(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return _json(await _answer(sv_, t0, None, code, vector, k, body.mode, exclude, allow_i))

    @app.get(
        f"{API}/items/{{item}}/similar",
        summary="Items nearest to an item (its code against the item codes)",
        response_model=Recommendations,
        responses={404: {"description": "unknown item"}},
    )
    async def similar(
        request: Request,
        item: str,
        k: Annotated[int, Query(ge=1, description="results to return")] = 20,
        mode: Annotated[
            Mode, Query(description="hamming | hierarchical | continuous | weighted (runs with query vectors)")
        ] = "hamming",
    ) -> Response:
        t0 = time.perf_counter()
        request.state.mode = mode
        sv_ = serving()
        sv = sv_.served
        k = sv.check_k(k)  # the item itself is excluded, so at most n_items - 1 come back
        i = sv.items.index([item])
        code, vector = sv.item_query(int(i[0]))
        return _json(await _answer(sv_, t0, None, code, vector, k, mode, i, None))

    @app.post(
        "/admin/swap",
        summary="Serve another run: load it beside the current one, then switch",
        responses={409: {"description": "the new run failed to load; the old one keeps serving"}},
    )
    async def swap(body: Annotated[Swap | None, Body()] = None) -> JSONResponse:
        if not settings.admin:
            return _error(403, "the admin endpoint is switched off (hashgnn serve --no-admin)")
        path = Path(body.run) if body is not None and body.run else state.path
        if path is None:
            return _field_error("body", "run", "name the run folder to serve")
        async with state.swap_lock:
            old = state.current
            try:
                new = await _load(path)
            except Exception as e:  # whatever went wrong, the old run keeps serving
                state.metrics.swaps.labels("failed").inc()
                still = old.served.run_id if old is not None else None
                why = str(e) if isinstance(e, HashgnnError) else f"{type(e).__name__}: {e}"
                return _error(
                    409, {"message": f"{path}: failed to load, still serving {still}: {why}", "serving": still}
                )
            state.current, state.path, state.load_error = new, path, None
            state.metrics.served(new.served)
            state.metrics.swaps.labels("ok").inc()
        if old is not None:
            # requests already holding the old run finish on it; its batchers drain, then stop
            asyncio.get_running_loop().create_task(old.close())
        return JSONResponse(
            {
                "serving": new.served.run_id,
                "previous": old.served.run_id if old else None,
                "load_seconds": round(new.served.load_seconds, 3),
            }
        )

    app.add_middleware(_Observe, metrics=state.metrics, max_body=settings.max_body_bytes)
    app.hot = _HotPath(trained_user, f"{API}/users/{{user}}/recommendations", state.metrics)
    return app


def app_from_env() -> FastAPI:
    """The app of ``$HASHGNN_SERVE_RUN`` with ``$HASHGNN_SERVE_SETTINGS`` (JSON): uvicorn's factory for
    ``hashgnn serve --workers N``, whose worker processes cannot be handed Python objects."""
    run = os.environ.get(ENV_RUN)
    raw = os.environ.get(ENV_SETTINGS)
    settings = ServeSettings(**json.loads(raw)) if raw else ServeSettings()
    return create_app(run, settings)


def settings_env(run: str | Path, settings: ServeSettings) -> dict[str, str]:
    """The environment that makes :func:`app_from_env` build ``create_app(run, settings)``."""
    return {ENV_RUN: str(run), ENV_SETTINGS: json.dumps(asdict(settings))}
