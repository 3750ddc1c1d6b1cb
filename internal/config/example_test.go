package config_test

import (
	"fmt"

	"github.com/batchflow/batchflow/internal/config"
)

func ExampleParseTargets() {
	// No --target flag was given, so BATCHFLOW_TARGETS is used; a trailing
	// ';' is fine. With any --target flag, the environment is ignored.
	flags := []string(nil)
	env := "main=postgres://app:s3cret@db:5432/app?sslmode=disable;demo=sqlite://demo.db;"

	targets, err := config.ParseTargets(flags, env)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range targets {
		fmt.Println(t.Name, t.Scheme, t) // printing a target never shows the password
	}
	main, _ := targets.Get("main")
	fmt.Println(main.DSN() == "postgres://app:s3cret@db:5432/app?sslmode=disable") // the driver gets it

	_, err = config.ParseTargets([]string{"main"}, env)
	fmt.Println(err)
	// Output:
	// main postgres main=postgres://app:xxxxx@db:5432/app?sslmode=disable
	// demo sqlite demo=sqlite://demo.db
	// true
	// --target wants NAME=DSN, got "main"
}

func ExampleRedactDSN() {
	fmt.Println(config.RedactDSN("postgres://app:s3cret@db/app?sslmode=verify-full&sslpassword=k3y"))
	fmt.Println(config.RedactDSN("mysql://app:p@ss/w0rd@db:3306/app"))
	// Output:
	// postgres://app:xxxxx@db/app?sslmode=verify-full&sslpassword=xxxxx
	// mysql://app:xxxxx@db:3306/app
}
