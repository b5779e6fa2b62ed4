// The web dashboard: static HTML, CSS and JS (no build step) served at /dashboard/. The page holds no privilege of
// its own: it calls only the public /v1 API, with the bearer key the user types in (kept in the browser's localStorage).
import express, { Router, type RequestHandler } from 'express';
import { fileURLToPath } from 'node:url';

const DASHBOARD_DIR = fileURLToPath(new URL('./dashboard/', import.meta.url));

/** Only our own scripts, styles and API: model output shown in the page can never load or run anything. */
const lockedDown: RequestHandler = (_req, res, next) => {
  res.setHeader('Content-Security-Policy', "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'");
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  next();
};

export function dashboardRouter(): Router {
  const router = Router();
  // `/dashboard` redirects to `/dashboard/` (express.static's directory redirect) so the page's relative URLs resolve.
  router.use('/dashboard', lockedDown, express.static(DASHBOARD_DIR, { index: 'index.html', redirect: true }));
  return router;
}
