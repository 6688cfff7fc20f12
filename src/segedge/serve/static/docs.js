// segedge serve's /docs: Swagger UI over /api/openapi.json, every file from this server (no CDN).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,  // Swagger UI would send the description to validator.swagger.io
});
