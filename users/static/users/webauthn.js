// Passkeys on the pages, with the browser's WebAuthn API (no library: the server's py_webauthn
// makes and checks the options; this only carries them to the authenticator and back as JSON).
//
// - A button with data-passkey-proof (a step-up or the log-in's second step) POSTs its form to
//   data-options-url for request options, asks navigator.credentials.get(), puts the
//   AuthenticationResponseJSON in the form's hidden "credential" field and submits the form.
// - A button with data-passkey-create="<id of a json_script>" asks navigator.credentials.create()
//   with those creation options, puts the RegistrationResponseJSON in "credential" and submits.
"use strict";
(() => {
  const toBytes = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)).buffer;
  };
  const toText = (buffer) =>
    btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const descriptors = (list) => (list || []).map((d) => ({ ...d, id: toBytes(d.id) }));

  const creationOptions = (json) =>
    PublicKeyCredential.parseCreationOptionsFromJSON
      ? PublicKeyCredential.parseCreationOptionsFromJSON(json)
      : { ...json, challenge: toBytes(json.challenge), user: { ...json.user, id: toBytes(json.user.id) },
          excludeCredentials: descriptors(json.excludeCredentials) };
  const requestOptions = (json) =>
    PublicKeyCredential.parseRequestOptionsFromJSON
      ? PublicKeyCredential.parseRequestOptionsFromJSON(json)
      : { ...json, challenge: toBytes(json.challenge), allowCredentials: descriptors(json.allowCredentials) };

  const asJSON = (credential) => {
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const r = credential.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      response.userHandle = r.userHandle ? toText(r.userHandle) : null;
    }
    return {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type, response,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  };

  const fail = (button, text) => {
    const slot = button.parentElement.querySelector(".passkey-error");
    if (slot) { slot.textContent = text; slot.hidden = false; }
    button.disabled = false;
  };
  const send = (form, credential) => {
    form.querySelector("input[name=credential]").value = JSON.stringify(asJSON(credential));
    form.submit();
  };
  const unsupported = () => !window.PublicKeyCredential || !navigator.credentials;
  const UNSUPPORTED = "This browser cannot use passkeys.";
  const REFUSED = "The passkey was not used (cancelled, timed out, or not one of this account's).";

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-passkey-proof], button[data-passkey-create]");
    if (!button) return;
    event.preventDefault();
    if (unsupported()) return fail(button, UNSUPPORTED);
    button.disabled = true;
    const form = button.form;
    try {
      if (button.dataset.passkeyCreate !== undefined) {
        const json = JSON.parse(document.getElementById(button.dataset.passkeyCreate).textContent);
        send(form, await navigator.credentials.create({ publicKey: creationOptions(json) }));
        return;
      }
      const body = new FormData(form);
      for (const secret of ["current_password", "code", "credential", "new_password1", "new_password2",
                            "old_password"]) body.delete(secret); // the options need none of them
      const answer = await fetch(button.dataset.optionsUrl, { method: "POST", body, credentials: "same-origin" });
      const data = await answer.json();
      if (!answer.ok) return fail(button, data.detail || REFUSED);
      send(form, await navigator.credentials.get({ publicKey: requestOptions(data.options) }));
    } catch (error) {
      fail(button, REFUSED);
    }
  });
})();
