// s3-admin: create a MinIO user whose only permissions are one IAM policy document.
//
//	S3_USER_SECRET=... s3-admin user NAME POLICY.json
//
// The server and its root keys come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY (as hack/cluster.sh writes them), the new user's secret key from
// S3_USER_SECRET (not an argument: arguments show in ps and in error messages). The policy is stored under the user's
// name and attached to the user alone; running it again replaces the secret and the policy.
// hack/s3_users.py writes the policies (processor, webhook, operator) and calls this.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/minio/madmin-go/v3"
)

func main() {
	if len(os.Args) != 4 || os.Args[1] != "user" || len(os.Getenv("S3_USER_SECRET")) < 8 {
		fmt.Fprintln(os.Stderr, "usage: S3_USER_SECRET=<8 or more characters> s3-admin user NAME POLICY.json")
		os.Exit(2)
	}
	if err := user(os.Args[2], os.Getenv("S3_USER_SECRET"), os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "s3-admin:", err)
		os.Exit(1)
	}
}

func user(name, secret, policyFile string) error {
	policy, err := os.ReadFile(policyFile)
	if err != nil {
		return err
	}
	endpoint, err := url.Parse(os.Getenv("AWS_ENDPOINT_URL"))
	if err != nil || endpoint.Host == "" {
		return fmt.Errorf("AWS_ENDPOINT_URL is not a URL: %q", os.Getenv("AWS_ENDPOINT_URL"))
	}
	admin, err := madmin.New(endpoint.Host, os.Getenv("AWS_ACCESS_KEY_ID"),
		os.Getenv("AWS_SECRET_ACCESS_KEY"), endpoint.Scheme == "https")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := admin.AddCannedPolicy(ctx, name, policy); err != nil {
		return fmt.Errorf("policy %s: %w", name, err)
	}
	if err := admin.AddUser(ctx, name, secret); err != nil {
		return fmt.Errorf("user %s: %w", name, err)
	}
	if err := admin.SetPolicy(ctx, name, name, false); err != nil {
		return fmt.Errorf("attaching policy %s: %w", name, err)
	}
	return nil
}
