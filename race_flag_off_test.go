//go:build !race

package tern

const raceBuild = false
