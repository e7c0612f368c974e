// The coins API reference: Swagger UI rendering this server's /openapi.json. "Authorize" takes an
// access token from POST /oauth/token; "Try it out" then calls this same server.
window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    // No call to validator.swagger.io: the page works with no internet access.
    validatorUrl: null
  });
});
