// The dashboard's pages, by the name in the address (#/name). Each mounts
// into <main> and returns { refresh }, which the poller calls every few
// seconds; a refresh re-renders only the regions whose data changed, so focus
// and scroll stay where they were.

import { overview } from "./overview.js";
import { deployments, routes } from "./fleet.js";
import { requests, request, events } from "./records.js";
import { plugins } from "./plugins.js";

export const pages = {
  overview: { title: "Overview", mount: overview },
  deployments: { title: "Deployments", mount: deployments },
  routes: { title: "Routes", mount: routes },
  requests: { title: "Requests", mount: requests },
  request: { title: "Request", mount: request },
  events: { title: "Events", mount: events },
  plugins: { title: "Plugins", mount: plugins },
};
