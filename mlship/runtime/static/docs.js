// Swagger UI over this server's /openapi.json, with nothing fetched from another host: no validator badge (it
// calls validator.swagger.io), and the bearer token the model's page was given (sessionStorage) sent along.
"use strict";
(function () {
  var token = "";
  try { token = window.sessionStorage.getItem("mlship.token") || ""; } catch (e) { /* storage off */ }
  window.ui = window.SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: false,
    tryItOutEnabled: true,
    requestInterceptor: function (request) {
      if (token && !request.headers.Authorization) { request.headers.Authorization = "Bearer " + token; }
      return request;
    },
  });
})();
