"""The web console (:mod:`.routes`), served by the server itself: templates and assets inside the
package, no CDN, works offline, under a strict Content-Security-Policy.

    GET /ui                          models and versions serving, traffic, errors, latency, drift flags
    GET /ui/models/{name}            one model: latency p50/p95/p99 by stage, throughput and errors over
                                     the window, drift per feature with the reference histogram overlaid,
                                     output statistics, recent sampled requests with annotated thumbnails
    GET /ui/samples/{id}.jpg         a sample's thumbnail with its detections drawn (a blank canvas when
                                     the server redacts images)
    GET /ui/static/{file}            the stylesheet and the small refresh script

Every page is a ``read`` (``repository`` for the overview, ``model:NAME`` for a model and its
samples): the viewer role when authentication is on. The audit tail is shown when authentication is
on, to principals allowed to ``read`` the resource ``audit``. ``?window=15m`` picks the window.
"""
