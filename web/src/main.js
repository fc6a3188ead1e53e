// The web app: a hash router over four pages, all talking to the public API.
import "./style.css";
import * as api from "./api.js";
import { loginView, signupView } from "./auth-views.js";
import { h, replace } from "./dom.js";
import * as session from "./session.js";
import { newTaskView, taskView, tasksView } from "./task-views.js";

const app = document.getElementById("app");
const nav = document.getElementById("nav");
let active = [];
let notice = "";

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function register(resource) {
  active.push(resource);
}

function renderNav() {
  const current = session.load();
  if (!current) {
    replace(nav, h("a", { href: "#/login", text: "Log in" }), h("a", { href: "#/signup", text: "Sign up" }));
    return;
  }
  const logout = h("button", { type: "button", class: "link", text: "Log out" });
  logout.addEventListener("click", async () => {
    await api.logOut();
    notice = "You are logged out.";
    go("#/login");
  });
  replace(
    nav,
    h("a", { href: "#/tasks", text: "My tasks" }),
    h("a", { href: "#/new", text: "New task" }),
    h("span", { class: "who", text: current.email }),
    logout,
  );
}

function render() {
  for (const resource of active) resource.stop();
  active = [];
  const route = location.hash.replace(/^#/, "") || "/tasks";
  const signedIn = Boolean(session.token());
  let view;
  if (route === "/signup") view = signupView(go);
  else if (!signedIn || route === "/login") {
    view = loginView(go, notice);
    notice = "";
  } else if (route === "/new") view = newTaskView(go);
  else if (route.startsWith("/tasks/")) view = taskView(go, register, decodeURIComponent(route.slice("/tasks/".length)));
  else view = tasksView(go, register);
  renderNav();
  replace(app, view);
  document.title = `${app.querySelector("h1")?.textContent || "IDRL"} · IDRL clips`;
  app.focus({ preventScroll: true });
}

api.whenUnauthorized(() => {
  session.forget();
  notice = "Your session has ended: log in again.";
  go("#/login");
});
window.addEventListener("hashchange", render);
render();
