package main

import (
	"context"
	"errors"
)

func runPlot(ctx context.Context, e *env, args []string) error { return errors.New("todo") }
func runDemo(ctx context.Context, e *env, args []string) error { return errors.New("todo") }
