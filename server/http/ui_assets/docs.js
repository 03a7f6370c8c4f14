// /docs: Swagger UI (vendored) renders /openapi.json; with API keys set, the
// key this tab holds goes with the document's fetch and every "Try it out".
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  // Ask for a key first if the document needs one.
  const probe = await EmberKey.request("/openapi.json");
  const spec = await probe.json();
  SwaggerUIBundle({
    spec,
    dom_id: "#swagger",
    deepLinking: true,
    tryItOutEnabled: false,
    requestInterceptor: (request) => {
      const key = EmberKey.get();
      if (key && !request.headers.Authorization) request.headers.Authorization = "Bearer " + key;
      return request;
    },
  });
});
