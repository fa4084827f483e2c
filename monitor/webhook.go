package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// The webhook outbox: every alert is queued in the same transaction that
// stores it, and leaves the queue only after the receiver answered 2xx. So
// an alert is never lost, whatever stops the monitor, and is delivered once
// as long as the monitor is not killed between the receiver's answer and the
// next commit; for that window, each POST carries the alert's stable UID as
// its Idempotency-Key, for the receiver to drop a repeat.

// deliverDue posts every alert whose delivery is due, oldest first, and
// returns when the next not-yet-due one will be (zero if none). It stops at
// the first failure so alerts arrive in order.
func (m *Monitor) deliverDue(ctx context.Context) (time.Time, error) {
	for {
		now := time.Now()
		items, next, err := m.store.dueOutbox(ctx, now, 50)
		if err != nil {
			return time.Time{}, err
		}
		if len(items) == 0 {
			m.updateOutboxGauge(ctx)
			return next, nil
		}
		for _, it := range items {
			if err := m.post(ctx, it.Alert); err != nil {
				if ctx.Err() != nil {
					return time.Time{}, ctx.Err()
				}
				attempts := it.Attempts + 1
				backoff := m.cfg.WebhookMinBackoff << min(attempts-1, 20)
				if backoff > m.cfg.WebhookMaxBackoff || backoff <= 0 {
					backoff = m.cfg.WebhookMaxBackoff
				}
				at := now.Add(backoff)
				m.metrics.deliveries.WithLabelValues("failed").Inc()
				m.log.Warn("webhook delivery failed", slog.Int64("alert", it.Alert.ID), slog.Int("attempts", attempts),
					slog.Duration("retry_in", backoff), slog.String("error", err.Error()))
				if err := m.store.deliveryFailed(ctx, it.Alert.ID, attempts, at, err.Error()); err != nil {
					return time.Time{}, err
				}
				m.updateOutboxGauge(ctx)
				return at, nil
			}
			m.metrics.deliveries.WithLabelValues("ok").Inc()
			if err := m.store.delivered(ctx, it.Alert.ID, time.Now()); err != nil {
				return time.Time{}, err
			}
		}
	}
}

func (m *Monitor) updateOutboxGauge(ctx context.Context) {
	if n, err := m.store.outboxLen(ctx); err == nil {
		m.metrics.outbox.Set(float64(n))
	}
}

func (m *Monitor) post(ctx context.Context, a Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", a.UID)
	resp, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

// deliverLoop runs deliveries until ctx ends, waking when an alert is
// raised or a retry is due.
func (m *Monitor) deliverLoop(ctx context.Context) {
	for {
		next, err := m.deliverDue(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.Error("webhook outbox", slog.String("error", err.Error()))
			next = time.Now().Add(m.cfg.WebhookMinBackoff)
		}
		var timer *time.Timer
		var due <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(time.Until(next))
			due = timer.C
		}
		select {
		case <-ctx.Done():
		case <-m.wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// deliverOnce is RunOnce's delivery: retry until the outbox is empty or the
// time allowed has passed; it returns how many alerts remain undelivered.
func (m *Monitor) deliverOnce(ctx context.Context) (int, error) {
	dctx, cancel := context.WithTimeout(ctx, m.cfg.OnceDeliveryTimeout)
	defer cancel()
	for {
		next, err := m.deliverDue(dctx)
		if err != nil && dctx.Err() == nil {
			return 0, err
		}
		if next.IsZero() || dctx.Err() != nil {
			break
		}
		select {
		case <-dctx.Done():
		case <-time.After(time.Until(next)):
		}
	}
	return m.store.outboxLen(context.WithoutCancel(ctx))
}
