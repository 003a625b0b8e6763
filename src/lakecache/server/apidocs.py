"""The REST API's reference at ``/api/v1/docs``: Swagger UI, served by this server.

FastAPI's default page loads Swagger UI from a public CDN, which fails on a
network without Internet access and asks browsers to run third-party code
next to the session cookie. Here the files come from the ``swagger-ui-py``
package (a dependency) and the page runs under a strict Content-Security-Policy:
scripts from this server only, the one that starts Swagger UI included.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from lakecache.errors import NotFoundError

#: Swagger UI files the page uses; nothing else of the package is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_START = """\
// Start Swagger UI on this server's own spec (named by the page, not guessed here).
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: false,
  });
});
"""


def _bundle_dir() -> Path:
    import swagger_ui  # Swagger UI 5: renders the OpenAPI 3.1 that FastAPI writes

    return Path(swagger_ui.__file__).parent / "static"


def install(app: FastAPI, prefix: str, spec_url: str) -> None:
    """Serve the reference page at ``{prefix}/docs`` for the spec at ``spec_url``."""
    base = f"{prefix}/docs"
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    page = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>lakecache REST API</title>
  <link rel="stylesheet" href="{base}/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="{base}/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui" data-spec="{spec_url}"></div>
  <script src="{base}/assets/swagger-ui-bundle.js"></script>
  <script src="{base}/start.js"></script>
</body>
</html>
"""

    def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    def start() -> Response:
        return Response(_START, media_type="text/javascript", headers=headers)

    def asset(name: str) -> FileResponse:
        kind = ASSETS.get(name)
        if kind is None:
            raise NotFoundError(f"no file {name!r} here", hint=f"The API reference is at {base}.")
        return FileResponse(
            _bundle_dir() / name,
            media_type=kind,
            headers={**headers, "Cache-Control": "public, max-age=86400"},
        )

    app.add_api_route(base, docs, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{base}/start.js", start, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{base}/assets/{{name}}", asset, methods=["GET"], include_in_schema=False)
