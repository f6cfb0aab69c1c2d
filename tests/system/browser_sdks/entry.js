// The three vendors' browser SDKs, unchanged, exposed to the test pages as window.SDKS (bundled by esbuild).
import { AnalyticsBrowser } from "@segment/analytics-next";
import * as snowplow from "@snowplow/browser-tracker";
import Plausible from "plausible-tracker";

window.SDKS = { AnalyticsBrowser, snowplow, Plausible };
