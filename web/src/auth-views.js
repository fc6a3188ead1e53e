// Sign up and log in. The API's messages are shown next to the field they concern.
import * as api from "./api.js";
import { field, h, setFieldError } from "./dom.js";

// Which form field an API error is about: the field named in a validation message
// ("password: ..."), the field a conflict code names, or the form as a whole.
export function fieldsOf(error, names) {
  const found = {};
  const codes = { username_taken: "username", email_taken: "email" };
  if (codes[error.code]) {
    found[codes[error.code]] = error.message;
    return found;
  }
  if (error.status === 429) {
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    return { form: `${error.message}.${wait}` };
  }
  for (const part of String(error.message).split("; ")) {
    const match = /^([A-Za-z_0-9.]+): (.*)$/.exec(part);
    let name = match && names.includes(match[1]) ? match[1] : null;
    let text = match ? match[2] : part;
    text = text.replace(/^Value error, /, "");
    if (!name && names.includes("password_2") && text.includes("password_2")) name = "password_2";
    if (!name) name = names.find((candidate) => text.toLowerCase().startsWith(candidate.replace("_2", ""))) || "form";
    found[name] = found[name] ? `${found[name]}; ${text}` : text;
  }
  return found;
}

function showErrors(entries, formError, error) {
  const found = fieldsOf(error, Object.keys(entries));
  for (const [name, entry] of Object.entries(entries)) setFieldError(entry, found[name]);
  formError.textContent = found.form || "";
  const first = Object.keys(entries).find((name) => found[name]);
  if (first) entries[first].input.focus();
}

function authForm(title, entries, submitLabel, onSubmit, footer) {
  const formError = h("p", { class: "form-error", role: "alert" });
  const button = h("button", { type: "submit", class: "primary", text: submitLabel });
  const form = h(
    "form",
    { class: "card narrow", novalidate: true, "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", text: title }),
    Object.values(entries).map((entry) => entry.wrapper),
    formError,
    button,
    footer,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      await onSubmit();
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      showErrors(entries, formError, error);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export function loginView(go, notice) {
  const entries = {
    email: field("Email or username", { name: "email", type: "text", autocomplete: "username", required: true }),
    password: field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }),
  };
  return authForm(
    "Log in",
    entries,
    "Log in",
    async () => {
      await api.logIn(entries.email.input.value.trim(), entries.password.input.value);
      go("#/tasks");
    },
    [
      notice ? h("p", { class: "notice", role: "status", text: notice }) : null,
      h("p", {}, "No account yet? ", h("a", { href: "#/signup", text: "Sign up" })),
    ],
  );
}

export function signupView(go) {
  const entries = {
    username: field("Username", { name: "username", autocomplete: "username", required: true }),
    email: field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    password: field("Password", { name: "password", type: "password", autocomplete: "new-password", required: true }),
    password_2: field("Password again", { name: "password_2", type: "password", autocomplete: "new-password", required: true }),
  };
  const hint = h("p", { class: "hint", text: "At least 8 characters with an upper-case letter, a lower-case letter and a digit." });
  entries.password.wrapper.insertBefore(hint, entries.password.error);
  return authForm(
    "Sign up",
    entries,
    "Create account",
    async () => {
      const values = Object.fromEntries(Object.entries(entries).map(([name, entry]) => [name, entry.input.value]));
      values.username = values.username.trim();
      values.email = values.email.trim();
      await api.signUp(values);
      await api.logIn(values.email, values.password);
      go("#/tasks");
    },
    h("p", {}, "Already registered? ", h("a", { href: "#/login", text: "Log in" })),
  );
}
